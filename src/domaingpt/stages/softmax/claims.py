"""The study's Part 3 statements (the softmax output layer), checked on the softmax tables.

Each claim is scoped to one model ("shakespeare model"), one model on one prompt corpus
("shakespeare model, math prompts"), or a pair of models, and worded from
:mod:`domaingpt.core.published`. A claim the run cannot test (no model trained on the
corpus, fewer than two checkpoints, a run that ends before the study's iteration, an
interval that straddles zero) is "not measured", never guessed.

Every claim carries its ``effect`` (see :class:`~domaingpt.core.claims.Claim`): this
model's estimate, positive where it supports the claim, zero at its null; the unit is
the claim's own (bits, probability, iterations). None of these claims is about one
named model rather than its domain, so none is ``per_model``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from domaingpt.context.stage import Tables
from domaingpt.core import published
from domaingpt.core.claims import Claim, Verdict, holds_if, unmeasured
from domaingpt.core.pooling import per_corpus
from domaingpt.core.statistics import welch_ci


def _model_for(last: pd.DataFrame, corpus: str) -> str | None:
    """The run's model trained on ``corpus``, if any."""
    match = last.loc[last["model_corpus"] == corpus, "model"]
    return str(match.iloc[0]) if len(match) else None


def _flag(value: Any) -> bool | None:
    """A True/False/None cell (None or NaN for "not measurable") as a Python value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value)


def _fmt_iter(value: Any) -> str:
    return "not reached" if value is None or pd.isna(value) else f"iteration {int(value)}"


def _training_claims(summary: pd.DataFrame, model: str) -> list[Claim]:
    """In-domain entropy falls and p(true) rises from the first checkpoint to the last."""
    scope = f"{model} model"
    s = summary[(summary["model"] == model) & (summary["domain"] == "in")]
    s = s.sort_values("iteration")
    if len(s) < 2:
        why = "no in-domain prompts" if s.empty else "fewer than two checkpoints"
        return [
            unmeasured(published.ENTROPY_FALLS, why, scope),
            unmeasured(published.P_TRUE_RISES, why, scope),
        ]
    e = s["entropy_mean"].to_numpy()
    p = s["p_true_mean"].to_numpy()
    it = s["iteration"].to_numpy()
    falls = int((np.diff(e) < 0).sum())
    span = {"first_iteration": int(it[0]), "final_iteration": int(it[-1])}
    return [
        Claim(
            published.ENTROPY_FALLS,
            holds_if(bool(e[-1] < e[0])),
            f"in-domain mean entropy {e[0]:.2f} bits at iteration {it[0]} -> {e[-1]:.2f} "
            f"bits at {it[-1]}; fell at {falls} of {len(e) - 1} checkpoint steps",
            scope,
            {
                **span,
                "entropy_first_bits": float(e[0]),
                "entropy_final_bits": float(e[-1]),
                "steps_fallen": falls,
                "steps": len(e) - 1,
                "entropy_fall_bits": float(e[0] - e[-1]),
            },
            effect=float(e[0] - e[-1]),
        ),
        Claim(
            published.P_TRUE_RISES,
            holds_if(bool(p[-1] > p[0])),
            f"in-domain mean p(true) {p[0]:.3f} at iteration {it[0]} -> {p[-1]:.3f} at {it[-1]}",
            scope,
            {
                **span,
                "p_true_first": float(p[0]),
                "p_true_final": float(p[-1]),
                "p_true_rise": float(p[-1] - p[0]),
            },
            effect=float(p[-1] - p[0]),
        ),
    ]


def _entropy_gap(g: pd.DataFrame, final: int, scope: str) -> Claim:
    """Out- minus in-domain entropy (averaged over every position of a prompt) on the
    rows ``g`` of one model's final checkpoint, with a Welch 95% interval: above zero
    holds, below fails; the difference is the effect."""
    inside, outside = g[g["domain"] == "in"], g[g["domain"] == "out"]
    e_in, e_out = inside["entropy_all_bits"].to_numpy(), outside["entropy_all_bits"].to_numpy()
    if len(e_in) < 2 or len(e_out) < 2:
        return Claim(
            published.OOD_ENTROPY,
            Verdict.UNMEASURED,
            "needs in- and out-of-domain prompts",
            scope,
            {"n_out": len(e_out), "n_in": len(e_in)},
        )
    last_in, last_out = inside["entropy_bits"].mean(), outside["entropy_bits"].mean()
    diff, lo, hi = welch_ci(e_out, e_in)
    return Claim(
        published.OOD_ENTROPY,
        holds_if(True if lo > 0 else False if hi < 0 else None),
        f"final checkpoint ({final}), entropy averaged over every position of a "
        f"prompt: out-of-domain {e_out.mean():.2f} bits vs in-domain "
        f"{e_in.mean():.2f} bits, difference {diff:+.2f} (95% CI {lo:+.2f} to "
        f"{hi:+.2f}; n={len(e_out)}/{len(e_in)} prompts); at the last position "
        f"{last_out:.2f} vs {last_in:.2f} bits",
        scope,
        {
            "iteration": final,
            "entropy_out_bits": float(e_out.mean()),
            "entropy_in_bits": float(e_in.mean()),
            "difference_bits": float(diff),
            "ci95_low": float(lo),
            "ci95_high": float(hi),
            "n_out": len(e_out),
            "n_in": len(e_in),
        },
        effect=float(diff),
    )


def _ood_claims(summary: pd.DataFrame, last: pd.DataFrame, model: str) -> list[Claim]:
    """Out- vs in-domain entropy at the final checkpoint, once per out-of-domain prompt
    corpus ("shakespeare model, math prompts"), and pooled over them all ("shakespeare
    model, all out-of-domain prompts") where there are two or more: the pooled line holds
    only where every corpus points the same way (:mod:`domaingpt.core.pooling`)."""
    final = int(summary.loc[summary["model"] == model, "iteration"].max())
    g = last[(last["model"] == model) & (last["iteration"] == final)]
    return per_corpus(g, f"{model} model", lambda rows, scope: _entropy_gap(rows, final, scope))


def _hard_row(
    last: pd.DataFrame, hard: pd.DataFrame, corpus: str
) -> tuple[str | None, pd.Series | None]:
    """The model trained on ``corpus`` and its in-domain hardening row (None: absent)."""
    model = _model_for(last, corpus)
    if model is None:
        return None, None
    h = hard[(hard["model"] == model) & (hard["domain"] == "in")]
    return model, (h.iloc[0] if len(h) else None)


def _reached_at(h: pd.Series) -> int | None:
    """The hardening iteration, None when it is not reached (or undefined)."""
    return int(h["hardening_iteration"]) if _flag(h["reached"]) else None


def _hardening_verdict(
    reached: bool | None, hit: Any, bound: int, later: bool, short: bool
) -> Verdict:
    """The study's "hardens by ~bound" (``later``: "still moving after bound") on this run.

    ``short``: the run ends before ``bound``, so it cannot test either reading: a model
    that settles within a short run may move again later, and one that has not settled
    yet says nothing about ``bound`` (a hardening iteration is never past the run's end).
    """
    if reached is None or short:
        return Verdict.UNMEASURED
    if reached:
        return holds_if((int(hit) <= bound) != later)
    return holds_if(later)


def _hardening_margin(
    reached: bool | None, hit: Any, final: int, bound: int, later: bool
) -> float | None:
    """The effect of a hardening claim, in iterations: ``bound − hardening iteration``
    for "hardens by ``bound``" (``later``: the reverse, for "still moving after
    ``bound``"). A model that has not hardened by the end of the run is counted at its
    final iteration, a bound on a hardening that comes later still (censored: the margin
    is at most this for "by", at least this for "after")."""
    if reached is None:
        return None
    at = int(hit) if reached else final
    return float(at - bound if later else bound - at)


def _hardening_claim(last: pd.DataFrame, hard: pd.DataFrame, corpus: str) -> Claim:
    """Where the model of ``corpus`` hardens in domain, against the study's iteration."""
    words = published.HARDENING_BY_CORPUS[corpus]
    bound, later = published.HARDENING[corpus]
    model, h = _hard_row(last, hard, corpus)
    scope = f"{model or corpus} model"
    if model is None or h is None:
        return unmeasured(words, f"no {corpus} model in this run", scope)
    reached = _flag(h["reached"])
    hit = h["hardening_iteration"]
    final = int(h["final_iteration"])
    evidence = (
        f"in-domain hardening (mean JS < {h['epsilon']:g} bits between consecutive "
        f"checkpoints from then on): {_fmt_iter(hit)}; trained to {final}; "
        f"last JS {h['last_js_bits']:.3f} bits"
    )
    short = final < bound
    verdict = _hardening_verdict(reached, hit, bound, later, short)
    if short:
        evidence += f"; the run ends before iteration {bound}, so it cannot test this"
    numbers = {
        "hardening_iteration": _reached_at(h),
        "final_iteration": final,
        "study_iteration": bound,
        "epsilon_bits": float(h["epsilon"]),
        "last_js_bits": float(h["last_js_bits"]),
    }
    effect = None if short else _hardening_margin(reached, hit, final, bound, later)
    numbers["margin_iterations"] = effect
    return Claim(words, verdict, evidence, scope, numbers, effect=effect)


def _order_claim(last: pd.DataFrame, hard: pd.DataFrame, a: str, b: str, words: str) -> Claim:
    """The model of ``a`` hardens (in domain) before the model of ``b``; never hardening
    counts as later than any iteration, and neither hardening is not measured. The effect
    is ``b``'s hardening iteration minus ``a``'s, a model that never hardens counted at
    its final iteration (a lower bound of its hardening iteration)."""
    (ma, ha), (mb, hb) = _hard_row(last, hard, a), _hard_row(last, hard, b)
    scope = f"{ma or a} and {mb or b} models"
    if ha is None or hb is None:
        return unmeasured(words, f"needs both a {a} and a {b} model", scope)
    va, vb = _reached_at(ha), _reached_at(hb)
    evidence = f"{a}: {_fmt_iter(va)}, {b}: {_fmt_iter(vb)}"
    before = None
    if va is not None or vb is not None:
        before = (math.inf if va is None else va) < (math.inf if vb is None else vb)
    numbers = {f"{a}_hardening_iteration": va, f"{b}_hardening_iteration": vb}
    effect = None
    if before is not None:
        at_a = va if va is not None else int(ha["final_iteration"])
        at_b = vb if vb is not None else int(hb["final_iteration"])
        effect = float(at_b - at_a)
    numbers["gap_iterations"] = effect
    return Claim(words, holds_if(before), evidence, scope, numbers, effect=effect)


def _space_margin(o: pd.DataFrame) -> float | None:
    """The effect of the <space> claim (probability): how far <space>'s excess is above
    both zero and the third-highest excess of the other characters, the smaller of the
    two, so positive exactly when the claim's test (excess > 0, rank <= 3) passes. When
    <space> is not listed, its excess is at most the lowest listed one, and the margin
    computed from that is a bound (the margin is at most this); None with fewer than
    three other characters listed (a rank past the list cannot be placed)."""
    others = o.loc[o["char"] != " ", "excess"].sort_values(ascending=False).to_numpy()
    space = o.loc[o["char"] == " ", "excess"]
    if len(others) < 3:
        return float(space.iloc[0]) if len(space) else None
    excess = float(space.iloc[0]) if len(space) else float(o["excess"].min())
    return min(excess, excess - float(others[2]))


def _space_claim(last: pd.DataFrame, over: pd.DataFrame) -> Claim:
    """<space> over-predicted by the math model out of domain: a positive excess, ranked
    among its three most over-predicted characters."""
    model = _model_for(last, "math")
    scope = f"{model or 'math'} model"
    if model is None or over.empty or not (over["model"] == model).any():
        return unmeasured(published.MATH_SPACE, "no math model or no out-of-domain prompts", scope)
    o = over[over["model"] == model].sort_values("excess", ascending=False)
    space = o[o["char"] == " "]
    top3 = ", ".join(f"{r.label} {r.excess:+.3f}" for r in o.head(3).itertuples())
    margin = _space_margin(o)
    if not len(space):
        return Claim(
            published.MATH_SPACE,
            Verdict.FAILS,
            f"<space> is not among the listed over-predicted characters; top 3: {top3}",
            scope,
            {"space_rank": None, "listed": len(o), "space_margin": margin},
            effect=margin,
        )
    r = space.iloc[0]
    return Claim(
        published.MATH_SPACE,
        holds_if(bool(r["excess"] > 0 and int(r["rank"]) <= 3)),
        f"<space>: predicted {r['mean_prob']:.3f} vs frequency {r['corpus_freq']:.3f} "
        f"(excess {r['excess']:+.3f}, rank {int(r['rank'])}); top 3: {top3}",
        scope,
        {
            "space_mean_prob": float(r["mean_prob"]),
            "space_corpus_freq": float(r["corpus_freq"]),
            "space_excess": float(r["excess"]),
            "space_rank": int(r["rank"]),
            "space_margin": margin,
        },
        effect=margin,
    )


def claims(tables: Tables) -> list[Claim]:
    """Entropy and p(true) along training and out- vs in-domain entropy (per model), where
    each study model hardens and in what order, and the math model's <space>.

    ``tables`` is what :func:`~domaingpt.stages.softmax.results.load` returns (``last``,
    ``summary``, ``hardening``, ``overpredicted`` are read).
    """
    if not {"last", "summary", "hardening"} <= set(tables):
        why = "no softmax tables (the softmax stage has not run)"
        return [unmeasured(c, why) for c in (published.ENTROPY_FALLS, published.OOD_ENTROPY)]
    last, summary = tables["last"], tables["summary"]
    hard = tables["hardening"]
    over = tables.get("overpredicted", pd.DataFrame())
    out: list[Claim] = []
    for model in sorted(summary["model"].unique()) if len(summary) else []:
        out += _training_claims(summary, model)
        out += _ood_claims(summary, last, model)
    out += [_hardening_claim(last, hard, corpus) for corpus in published.HARDENING]
    out += [_order_claim(last, hard, a, b, words) for a, b, words in published.HARDENING_ORDER]
    out.append(_space_claim(last, over))
    return out

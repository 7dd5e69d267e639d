"""The study's Part 3 statements (the softmax output layer), checked on the probe tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from domaingpt.core.claims import Claim, holds_if
from domaingpt.core.stage import Tables
from domaingpt.core.statistics import Z95


def _model_for(last: pd.DataFrame, corpus: str) -> str | None:
    match = last.loc[last["model_corpus"] == corpus, "model"]
    return str(match.iloc[0]) if len(match) else None


def _flag(value) -> bool | None:
    """A True/False/None cell (None or NaN for "not measurable") as a Python value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value)


def _fmt_iter(value) -> str:
    return "not reached" if value is None or pd.isna(value) else f"iteration {int(value)}"


def probe_claims(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The study's Part 3 statements checked against this run's numbers.

    Columns: claim, model, holds (True / False / None = this run cannot test it),
    evidence (the numbers behind the verdict). ``tables`` is what :func:`load_probe`
    returns (``last``, ``summary``, ``hardening``, ``overpredicted``).
    """
    last, summary = tables["last"], tables["summary"]
    hard, over = tables["hardening"], tables.get("overpredicted", pd.DataFrame())
    rows: list[dict] = []

    def add(claim: str, model: str, holds: bool | None, evidence: str) -> None:
        rows.append({"claim": claim, "model": model, "holds": holds, "evidence": evidence})

    for model in sorted(summary["model"].unique()):
        s = summary[(summary["model"] == model) & (summary["domain"] == "in")]
        s = s.sort_values("iteration")
        if len(s) < 2:
            why = "no in-domain prompts" if s.empty else "fewer than two checkpoints"
            add("entropy falls with training", model, None, why)
            add("p(true) rises with training", model, None, why)
        else:
            e = s["entropy_mean"].to_numpy()
            it = s["iteration"].to_numpy()
            falls = int((np.diff(e) < 0).sum())
            add(
                "entropy falls with training",
                model,
                bool(e[-1] < e[0]),
                f"in-domain mean entropy {e[0]:.2f} bits at iteration {it[0]} -> {e[-1]:.2f} "
                f"bits at {it[-1]}; fell at {falls} of {len(e) - 1} checkpoint steps",
            )
            p = s["p_true_mean"].to_numpy()
            add(
                "p(true) rises with training",
                model,
                bool(p[-1] > p[0]),
                f"in-domain mean p(true) {p[0]:.3f} at iteration {it[0]} -> {p[-1]:.3f} at {it[-1]}",
            )
        final = int(summary.loc[summary["model"] == model, "iteration"].max())
        g = last[(last["model"] == model) & (last["iteration"] == final)]
        e_in = g.loc[g["domain"] == "in", "entropy_all_bits"].to_numpy()
        e_out = g.loc[g["domain"] == "out", "entropy_all_bits"].to_numpy()
        last_in = g.loc[g["domain"] == "in", "entropy_bits"].mean()
        last_out = g.loc[g["domain"] == "out", "entropy_bits"].mean()
        if len(e_in) < 2 or len(e_out) < 2:
            add(
                "out-of-domain entropy is higher",
                model,
                None,
                "needs in- and out-of-domain prompts",
            )
        else:
            diff = e_out.mean() - e_in.mean()
            se = math.sqrt(e_out.var(ddof=1) / len(e_out) + e_in.var(ddof=1) / len(e_in))
            lo, hi = diff - Z95 * se, diff + Z95 * se
            holds = True if lo > 0 else False if hi < 0 else None
            add(
                "out-of-domain entropy is higher",
                model,
                holds,
                f"final checkpoint ({final}), entropy averaged over every position of a "
                f"prompt: out-of-domain {e_out.mean():.2f} bits vs in-domain "
                f"{e_in.mean():.2f} bits, difference {diff:+.2f} (95% CI {lo:+.2f} to "
                f"{hi:+.2f}; n={len(e_out)}/{len(e_in)} prompts); at the last position "
                f"{last_out:.2f} vs {last_in:.2f} bits",
            )

    def hard_row(corpus: str) -> tuple[str | None, pd.Series | None]:
        model = _model_for(last, corpus)
        if model is None:
            return None, None
        h = hard[(hard["model"] == model) & (hard["domain"] == "in")]
        return model, (h.iloc[0] if len(h) else None)

    for corpus, bound, later in (
        ("math", 1000, False),
        ("shakespeare", 4000, False),
        ("wikipedia", 14000, True),
    ):
        claim = (
            f"{corpus.capitalize()} hardens later than {bound} iterations"
            if later
            else f"{corpus.capitalize()} hardens by ~{bound} iterations"
        )
        model, h = hard_row(corpus)
        if model is None or h is None:
            add(claim, model or "-", None, f"no {corpus} model in this run")
            continue
        reached = _flag(h["reached"])
        hit = h["hardening_iteration"]
        final = int(h["final_iteration"])
        ev = (
            f"in-domain hardening (mean JS < {h['epsilon']:g} bits between consecutive "
            f"checkpoints from then on): {_fmt_iter(hit)}; trained to {final}; "
            f"last JS {h['last_js_bits']:.3f} bits"
        )
        short = final < bound  # the run ends before the study's iteration: cannot see past it
        if reached is None:
            holds = None
        elif reached:
            early = int(hit) <= bound  # hit > bound implies the run is not short
            if later:
                holds = True if not early else (None if short else False)
            else:
                holds = False if not early else (None if short else True)
        else:
            holds = None if short else later
        if short and holds is None:
            ev += f"; the run ends before iteration {bound}, so it cannot test this"
        add(claim, model, holds, ev)

    def order(a: str, b: str) -> None:
        claim = f"{a.capitalize()} hardens before {b.capitalize()}"
        (ma, ha), (mb, hb) = hard_row(a), hard_row(b)
        if ha is None or hb is None:
            add(claim, "-", None, f"needs both a {a} and a {b} model")
            return
        va = int(ha["hardening_iteration"]) if _flag(ha["reached"]) else math.inf
        vb = int(hb["hardening_iteration"]) if _flag(hb["reached"]) else math.inf
        ev = f"{a}: {_fmt_iter(None if va == math.inf else va)}, {b}: {_fmt_iter(None if vb == math.inf else vb)}"
        holds = None if va == math.inf and vb == math.inf else bool(va < vb)
        add(claim, f"{ma},{mb}", holds, ev)

    order("math", "shakespeare")
    order("shakespeare", "wikipedia")

    math_model = _model_for(last, "math")
    claim = "Math model over-predicts <space> on out-of-domain prompts"
    if math_model is None or over.empty or not (over["model"] == math_model).any():
        add(claim, math_model or "-", None, "no math model or no out-of-domain prompts")
    else:
        o = over[over["model"] == math_model].sort_values("excess", ascending=False)
        space = o[o["char"] == " "]
        top3 = ", ".join(f"{r.label} {r.excess:+.3f}" for r in o.head(3).itertuples())
        if len(space):
            r = space.iloc[0]
            holds = bool(r["excess"] > 0 and int(r["rank"]) <= 3)
            ev = (
                f"<space>: predicted {r['mean_prob']:.3f} vs frequency {r['corpus_freq']:.3f} "
                f"(excess {r['excess']:+.3f}, rank {int(r['rank'])}); top 3: {top3}"
            )
        else:
            holds, ev = (
                False,
                f"<space> is not among the listed over-predicted characters; top 3: {top3}",
            )
        add(claim, math_model, holds, ev)
    return pd.DataFrame(rows, columns=["claim", "model", "holds", "evidence"])


def claims(tables: Tables) -> list[Claim]:
    """Entropy and p(true) along training, out- vs in-domain entropy, hardening, <space>."""
    rows = probe_claims(tables)
    return [
        Claim(
            r["claim"],
            holds_if(None if r["holds"] is None else bool(r["holds"])),
            r["evidence"],
            "" if r["model"] in ("-", "") else f"{r['model']} model",
        )
        for r in rows.to_dict("records")
    ]

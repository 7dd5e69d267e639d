"""The lens stage's claims: a pure function of its per-prompt table.

Depths are formation depths (:func:`.compute.formation_depth`: the depth from which on a
prompt's lens reading stays within the run's threshold of KL to the final prediction)
of each model's prompts; intervals are 95 % Student-t intervals over prompts (paired where
the same prompts are compared at two checkpoints, Welch where two sets of prompts are
compared). Out-of-domain claims are made once per (model, prompt corpus), with a pooled
line per model that holds only where its corpora agree (:mod:`domaingpt.core.pooling`).

Effects (:class:`~domaingpt.core.claims.Claim`), positive where they support the claim:
a claim checked on every model (or pair) at once takes the smallest of their effects,
positive only where every one is, as its verdict holds only where every one does. The
two claims that a difference exists in either direction ("its own depth", "moves")
take ``d² − SE²``, the unbiased estimate of the squared true difference (layers²): zero
when there is none whatever its sign, positive when there is, where a signed ``d`` would
call a consistent move towards the surface a failure.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from domaingpt.context.rundir import study_order
from domaingpt.context.stage import Tables
from domaingpt.core import published
from domaingpt.core.claims import Claim, display, smallest_effect, unmeasured, verdict_of
from domaingpt.core.pooling import per_corpus
from domaingpt.core.statistics import first_to_last, mean_ci, welch_ci
from domaingpt.stages.lens.compute import formation_depth, formation_threshold


def _final(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["iteration"] == df.groupby("model")["iteration"].transform("max")]


def _ci(mean: float, low: float, high: float) -> str:
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def _depths(depth: pd.DataFrame, model: str, domain: str) -> pd.Series:
    d = depth[(depth["model"] == model) & (depth["domain"] == domain)]
    return d["depth"].dropna()


def _squared_welch(a: pd.Series, b: pd.Series) -> float:
    """``(mean a − mean b)² − SE²``, SE² the Welch variance of the difference."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    se2 = a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b)
    return float((a.mean() - b.mean()) ** 2 - se2)


def _threshold_words(depth: pd.DataFrame, threshold: float) -> str:
    blocks = depth["layers"].unique()
    last = (
        f"{int(blocks[0])} = only the last block"
        if len(blocks) == 1
        else ("a model's number of blocks = only its last block")
    )
    return (
        f"formation depth in layers (from which on the lens reading stays within "
        f"{threshold:g} bits of KL of the final prediction; 0 = already the embeddings, "
        f"{last})"
    )


def domain_depths(depth: pd.DataFrame, threshold: float) -> Claim:
    """Each pair of models' in-domain formation depths differ (Welch interval off zero)."""
    final = _final(depth)
    models = [m for m in study_order(final["model"].unique()) if len(_depths(final, m, "in")) > 1]
    if len(models) < 2:
        return unmeasured(published.LENS_DEPTH, "needs two models with in-domain prompts")
    per_model = []
    numbers: dict[str, float | None] = {}
    for m in models:
        ci = mean_ci(_depths(final, m, "in").to_numpy())
        per_model.append(f"{display(m)} {_ci(ci['mean'], ci['ci_low'], ci['ci_high'])}")
        numbers[f"{m}_depth"] = ci["mean"]
    flags, pairs, effects = [], [], []
    blocks = final.groupby("model")["layers"].max()
    for a, b in combinations(models, 2):
        if blocks[a] != blocks[b]:  # depths in layers of models of two depths do not compare
            pairs.append(
                f"{display(a)} − {display(b)} not compared ({blocks[a]} and {blocks[b]} blocks)"
            )
            continue
        da, db = _depths(final, a, "in"), _depths(final, b, "in")
        diff, low, high = welch_ci(da, db)
        flags.append(low > 0 or high < 0)
        effects.append(_squared_welch(da, db))
        pairs.append(f"{display(a)} − {display(b)} {_ci(diff, low, high)}")
    if not flags:
        return unmeasured(published.LENS_DEPTH, "needs two models of one depth")
    effect = smallest_effect(effects)
    numbers["smallest_pair_squared_difference"] = effect
    evidence = (
        f"{_threshold_words(depth, threshold)}, in-domain prompts at the final checkpoint: "
        f"{'; '.join(per_model)}; differences: {'; '.join(pairs)}"
    )
    scope = ", ".join(f"{display(m)} model" for m in models)
    return Claim(published.LENS_DEPTH, verdict_of(flags), evidence, scope, numbers, effect=effect)


def depth_moves(depth: pd.DataFrame, threshold: float) -> Claim:
    """Per model: the in-domain depth at the final checkpoint differs from the first
    trained one (iteration > 0), paired over prompts."""
    flags, parts, effects = [], [], []
    numbers: dict[str, float | None] = {}
    d = depth[(depth["domain"] == "in") & (depth["iteration"] > 0)]
    for model in study_order(d["model"].unique()):
        wide = d[d["model"] == model].pivot_table(
            index="prompt_id", columns="iteration", values="depth"
        )
        change = first_to_last(wide)
        if change is None:
            continue
        first, last, ci = change
        flags.append(ci["ci_low"] > 0 or ci["ci_high"] < 0)
        effects.append(ci["mean"] ** 2 - ci["std"] ** 2 / ci["n"])
        parts.append(
            f"{display(model)} {wide[first].mean():.2f} → {wide[last].mean():.2f} (iteration "
            f"{int(first)} → {int(last)}; change {_ci(ci['mean'], ci['ci_low'], ci['ci_high'])})"
        )
        numbers[f"{model}_change"] = ci["mean"]
    if not flags:
        return unmeasured(published.LENS_MOVES, "needs two trained checkpoints of a model")
    effect = smallest_effect(effects)
    numbers["smallest_squared_change"] = effect
    evidence = f"in-domain {_threshold_words(depth, threshold)}: " + "; ".join(parts)
    return Claim(
        published.LENS_MOVES,
        verdict_of(flags),
        evidence,
        "in-domain prompts",
        numbers,
        effect=effect,
    )


def _later(rows: pd.DataFrame, scope: str) -> Claim:
    """Out-of-domain prompts of ``rows`` (one model's final checkpoint) form deeper than
    its in-domain ones (Welch); the difference in layers is the effect."""
    inside = rows.loc[rows["domain"] == "in", "depth"].dropna()
    outside = rows.loc[rows["domain"] == "out", "depth"].dropna()
    if len(inside) < 2 or len(outside) < 2:
        return unmeasured(published.LENS_OOD_LATER, "needs in- and out-of-domain prompts", scope)
    diff, low, high = welch_ci(outside, inside)
    evidence = (
        f"formation depth (layers) at the final checkpoint: out {outside.mean():.2f} vs in "
        f"{inside.mean():.2f} (difference {_ci(diff, low, high)}; "
        f"n={len(outside)}/{len(inside)} prompts)"
    )
    numbers = {"difference_layers": diff, "ci95_low": low, "ci95_high": high}
    return Claim(
        published.LENS_OOD_LATER, verdict_of([low > 0]), evidence, scope, numbers, effect=diff
    )


def ood_later(depth: pd.DataFrame) -> list[Claim]:
    """Per model at its final checkpoint, per out-of-domain prompt corpus and pooled:
    out-of-domain prompts form deeper (Welch)."""
    final = _final(depth)
    out = []
    for model in study_order(final["model"].unique()):
        rows = final[final["model"] == model]
        out += per_corpus(rows, f"{display(model)} model", _later, display)
    measured = [c for c in out if c.effect is not None]
    return measured or [unmeasured(published.LENS_OOD_LATER, "needs in- and out-of-domain prompts")]


def _entropy_every_layer(rows: pd.DataFrame, scope: str) -> Claim:
    """Out-of-domain lens entropy of ``rows`` (one model's final checkpoint) above the
    in-domain one at every layer (Welch, above 0); the effect is the smallest gap."""
    scope = f"{scope}, every layer's lens"
    cells, flags, gaps = [], [], []
    for layer, g in rows.groupby("layer", sort=True):
        inside = g.loc[g["domain"] == "in", "entropy_bits"]
        outside = g.loc[g["domain"] == "out", "entropy_bits"]
        if len(inside) < 2 or len(outside) < 2:
            continue
        diff, low, _ = welch_ci(outside, inside)
        flags.append(low > 0)
        gaps.append(diff)
        cells.append(f"layer {int(layer)} {diff:+.2f}{'' if low > 0 else ' (n.s.)'}")
    if not flags:
        return unmeasured(published.OOD_ENTROPY, "needs in- and out-of-domain prompts", scope)
    evidence = (
        "out- minus in-domain lens entropy (bits) at the final checkpoint, per layer "
        "(n.s.: 95 % interval includes 0): " + ", ".join(cells)
    )
    effect = min(gaps)
    numbers = {
        "layers_holding": sum(flags),
        "layers_tested": len(flags),
        "smallest_layer_gap_bits": effect,
    }
    return Claim(published.OOD_ENTROPY, verdict_of(flags), evidence, scope, numbers, effect=effect)


def ood_entropy_every_layer(per_prompt: pd.DataFrame) -> list[Claim]:
    """The study's out-of-domain entropy statement at every layer's lens (final
    checkpoints), per model and out-of-domain prompt corpus, and pooled per model."""
    final = _final(per_prompt)
    out = []
    for model in study_order(final["model"].unique()):
        rows = final[final["model"] == model]
        out += per_corpus(rows, f"{display(model)} model", _entropy_every_layer, display)
    measured = [c for c in out if c.effect is not None]
    return measured or [unmeasured(published.OOD_ENTROPY, "needs in- and out-of-domain prompts")]


def claims(tables: Tables) -> list[Claim]:
    per_prompt = tables.get("per_prompt")
    if per_prompt is None or per_prompt.empty:
        why = "no lens results in this run"
        return [
            unmeasured(c, why)
            for c in (published.LENS_DEPTH, published.LENS_MOVES, published.LENS_OOD_LATER)
        ]
    threshold = formation_threshold(tables)
    depth = formation_depth(per_prompt, threshold)
    return [
        domain_depths(depth, threshold),
        depth_moves(depth, threshold),
        *ood_later(depth),
        *ood_entropy_every_layer(per_prompt),
    ]

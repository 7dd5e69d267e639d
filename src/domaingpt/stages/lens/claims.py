"""The lens stage's claims: a pure function of its per-prompt table.

Depths are formation depths (:func:`.compute.formation_depth`) of each model's in-domain
prompts; intervals are 95 % normal intervals over prompts (paired where the same prompts
are compared at two checkpoints, Welch where two sets of prompts are compared).
"""

from __future__ import annotations

from itertools import combinations

import pandas as pd

from domaingpt.core import published
from domaingpt.core.claims import Claim, unmeasured, verdict_of
from domaingpt.core.rundir import study_order
from domaingpt.core.stage import Tables
from domaingpt.core.statistics import mean_ci, welch_ci
from domaingpt.report.format import display
from domaingpt.stages.lens.compute import formation_depth


def _final(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["iteration"] == df.groupby("model")["iteration"].transform("max")]


def _ci(mean: float, low: float, high: float) -> str:
    return f"{mean:.2f} [{low:.2f}, {high:.2f}]"


def _depths(depth: pd.DataFrame, model: str, domain: str) -> pd.Series:
    d = depth[(depth["model"] == model) & (depth["domain"] == domain)]
    return d["depth"].dropna()


def domain_depths(depth: pd.DataFrame) -> Claim:
    """Each pair of models' in-domain formation depths differ (Welch interval off zero)."""
    final = _final(depth)
    models = [m for m in study_order(final["model"].unique()) if len(_depths(final, m, "in")) > 1]
    if len(models) < 2:
        return unmeasured(published.LENS_DEPTH, "needs two models with in-domain prompts")
    per_model = []
    numbers: dict[str, float] = {}
    for m in models:
        ci = mean_ci(_depths(final, m, "in").to_numpy())
        per_model.append(f"{display(m)} {_ci(ci['mean'], ci['ci_low'], ci['ci_high'])}")
        numbers[f"{m}_depth"] = ci["mean"]
    flags, pairs = [], []
    for a, b in combinations(models, 2):
        diff, low, high = welch_ci(_depths(final, a, "in"), _depths(final, b, "in"))
        flags.append(low > 0 or high < 0)
        pairs.append(f"{display(a)} − {display(b)} {_ci(diff, low, high)}")
    layers = int(depth["layers"].max())
    evidence = (
        f"formation depth in layers (1 = formed by the first block, {layers} = only by the "
        f"last), in-domain prompts at the final checkpoint: {'; '.join(per_model)}; "
        f"differences: {'; '.join(pairs)}"
    )
    scope = ", ".join(f"{display(m)} model" for m in models)
    return Claim(published.LENS_DEPTH, verdict_of(flags), evidence, scope, numbers)


def depth_moves(depth: pd.DataFrame) -> Claim:
    """Per model: the in-domain depth at the final checkpoint differs from the first
    trained one (iteration > 0), paired over prompts."""
    flags, parts, numbers = [], [], {}
    d = depth[(depth["domain"] == "in") & (depth["iteration"] > 0)]
    for model in study_order(d["model"].unique()):
        wide = d[d["model"] == model].pivot_table(
            index="prompt_id", columns="iteration", values="depth"
        )
        if wide.shape[1] < 2:
            continue
        first, last = wide.columns[0], wide.columns[-1]
        ci = mean_ci((wide[last] - wide[first]).to_numpy())
        if ci["n"] < 2:
            continue
        flags.append(ci["ci_low"] > 0 or ci["ci_high"] < 0)
        parts.append(
            f"{display(model)} {wide[first].mean():.2f} → {wide[last].mean():.2f} (iteration "
            f"{int(first)} → {int(last)}; change {_ci(ci['mean'], ci['ci_low'], ci['ci_high'])})"
        )
        numbers[f"{model}_change"] = ci["mean"]
    if not flags:
        return unmeasured(published.LENS_MOVES, "needs two trained checkpoints of a model")
    evidence = "in-domain formation depth (layers): " + "; ".join(parts)
    return Claim(published.LENS_MOVES, verdict_of(flags), evidence, "in-domain prompts", numbers)


def ood_later(depth: pd.DataFrame) -> Claim:
    """Per model at its final checkpoint: out-of-domain prompts form deeper (Welch)."""
    final = _final(depth)
    flags, parts, numbers = [], [], {}
    for model in study_order(final["model"].unique()):
        inside, outside = _depths(final, model, "in"), _depths(final, model, "out")
        if len(inside) < 2 or len(outside) < 2:
            continue
        diff, low, high = welch_ci(outside, inside)
        flags.append(low > 0)
        parts.append(
            f"{display(model)} out {outside.mean():.2f} vs in {inside.mean():.2f} "
            f"(difference {_ci(diff, low, high)})"
        )
        numbers[f"{model}_difference"] = diff
    if not flags:
        return unmeasured(published.LENS_OOD_LATER, "needs in- and out-of-domain prompts")
    evidence = "formation depth (layers) at the final checkpoint: " + "; ".join(parts)
    return Claim(
        published.LENS_OOD_LATER, verdict_of(flags), evidence, "final checkpoints", numbers
    )


def ood_entropy_every_layer(per_prompt: pd.DataFrame) -> Claim:
    """The study's out-of-domain entropy statement at every layer's lens (final
    checkpoints): out-of-domain lens entropy above in-domain, Welch interval above 0."""
    final = _final(per_prompt)
    flags, parts = [], []
    for model in study_order(final["model"].unique()):
        m = final[final["model"] == model]
        cells = []
        for layer, g in m.groupby("layer", sort=True):
            inside = g.loc[g["domain"] == "in", "entropy_bits"]
            outside = g.loc[g["domain"] == "out", "entropy_bits"]
            if len(inside) < 2 or len(outside) < 2:
                continue
            diff, low, _ = welch_ci(outside, inside)
            flags.append(low > 0)
            cells.append(f"layer {int(layer)} {diff:+.2f}{'' if low > 0 else ' (n.s.)'}")
        if cells:
            parts.append(f"{display(model)}: {', '.join(cells)}")
    if not flags:
        return unmeasured(published.OOD_ENTROPY, "needs in- and out-of-domain prompts")
    evidence = (
        "out- minus in-domain lens entropy (bits) at the final checkpoint, per layer "
        "(n.s.: 95 % interval includes 0): " + "; ".join(parts)
    )
    held = sum(flags)
    numbers = {"layers_holding": held, "layers_tested": len(flags)}
    return Claim(
        published.OOD_ENTROPY, verdict_of(flags), evidence, "every layer's logit lens", numbers
    )


def claims(tables: Tables) -> list[Claim]:
    per_prompt = tables.get("per_prompt")
    if per_prompt is None or per_prompt.empty:
        why = "no lens results in this run"
        return [
            unmeasured(c, why)
            for c in (published.LENS_DEPTH, published.LENS_MOVES, published.LENS_OOD_LATER)
        ]
    depth = formation_depth(per_prompt)
    return [
        domain_depths(depth),
        depth_moves(depth),
        ood_later(depth),
        ood_entropy_every_layer(per_prompt),
    ]

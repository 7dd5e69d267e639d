"""The attention stage's claims: a pure function of its ``per_prompt`` and ``prompts``
tables. Intervals are normal intervals over in-domain prompts of paired differences:
a head's share minus the chance share of the same prompt, or a prompt's entropy at two
checkpoints. Testing every head of a model at once, the intervals are Bonferroni-widened
so that they hold together at 95 %.
"""

from __future__ import annotations

import pandas as pd

from domaingpt.core import published
from domaingpt.core.claims import Claim, unmeasured, verdict_of
from domaingpt.core.rundir import study_order
from domaingpt.core.stage import Tables
from domaingpt.core.statistics import bonferroni, first_to_last, mean_ci
from domaingpt.report.format import display


def _ci(ci: dict) -> str:
    return f"{ci['mean']:+.3f} [{ci['ci_low']:+.3f}, {ci['ci_high']:+.3f}]"


def previous_word_head(per_prompt: pd.DataFrame, prompts: pd.DataFrame) -> Claim:
    """Per model (final checkpoint, in-domain): some head's previous-word share exceeds
    the chance share, its Bonferroni interval (over the model's heads) above zero."""
    chance = prompts.set_index("prompt_id")["chance_previous_word"]
    d = per_prompt[
        (per_prompt["domain"] == "in")
        & (per_prompt["iteration"] == per_prompt.groupby("model")["iteration"].transform("max"))
    ]
    flags, parts, numbers = [], [], {}
    for model in study_order(d["model"].unique()):
        m = d[d["model"] == model]
        heads = list(m.groupby(["layer", "head"], sort=True))
        confidence = bonferroni(len(heads))
        tested = []
        for (layer, head), g in heads:
            excess = g["share_previous_word"].to_numpy() - chance.loc[g["prompt_id"]].to_numpy()
            tested.append(((int(layer), int(head)), mean_ci(excess, confidence), g))
        (layer, head), ci, g = max(tested, key=lambda t: t[1]["mean"])
        if ci["n"] < 2:
            continue
        above = sum(t[1]["ci_low"] > 0 for t in tested)
        flags.append(above > 0)
        share = float(g["share_previous_word"].mean())
        parts.append(
            f"{display(model)}: layer {layer} head {head} puts {share:.3f} of its attention "
            f"on the previous word, chance {share - ci['mean']:.3f} (excess {_ci(ci)}); "
            f"{above} of {len(tested)} heads above chance"
        )
        numbers[f"{model}_best_share"] = share
        numbers[f"{model}_best_excess"] = ci["mean"]
        numbers[f"{model}_heads_above"] = above
    if not flags:
        return unmeasured(published.ATTN_PREVIOUS_WORD, "needs in-domain prompts")
    evidence = (
        "share of attention on the previous word at the final checkpoint, in-domain prompts "
        "(intervals Bonferroni-widened over each model's heads): " + "; ".join(parts)
    )
    return Claim(
        published.ATTN_PREVIOUS_WORD, verdict_of(flags), evidence, "final checkpoints", numbers
    )


def focus(per_prompt: pd.DataFrame) -> Claim:
    """Per model: in-domain attention entropy (mean over layers and heads) lower at the
    final checkpoint than at the first trained one, paired over prompts."""
    d = per_prompt[(per_prompt["domain"] == "in") & (per_prompt["iteration"] > 0)]
    flags, parts, numbers = [], [], {}
    for model in study_order(d["model"].unique()):
        wide = (
            d[d["model"] == model]
            .groupby(["prompt_id", "iteration"])["entropy_bits"]
            .mean()
            .unstack("iteration")
        )
        change = first_to_last(wide)
        if change is None:
            continue
        first, last, ci = change
        flags.append(ci["ci_high"] < 0)
        parts.append(
            f"{display(model)} {wide[first].mean():.3f} → {wide[last].mean():.3f} bits "
            f"(iteration {int(first)} → {int(last)}; change {_ci(ci)})"
        )
        numbers[f"{model}_first"] = float(wide[first].mean())
        numbers[f"{model}_last"] = float(wide[last].mean())
    if not flags:
        return unmeasured(published.ATTN_FOCUS, "needs two trained checkpoints of a model")
    evidence = "in-domain attention entropy, mean over layers and heads: " + "; ".join(parts)
    return Claim(published.ATTN_FOCUS, verdict_of(flags), evidence, "in-domain prompts", numbers)


def claims(tables: Tables) -> list[Claim]:
    per_prompt, prompts = tables.get("per_prompt"), tables.get("prompts")
    if per_prompt is None or per_prompt.empty or prompts is None:
        why = "no attention results in this run"
        return [
            unmeasured(published.ATTN_PREVIOUS_WORD, why),
            unmeasured(published.ATTN_FOCUS, why),
        ]
    return [previous_word_head(per_prompt, prompts), focus(per_prompt)]

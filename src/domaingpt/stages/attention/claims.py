"""The attention stage's claims: a pure function of its ``per_prompt`` and ``prompts``
tables. Intervals are Student-t intervals over in-domain prompts of paired differences:
a head's share minus the chance share of the same prompt, or a prompt's entropy at two
checkpoints. Testing every head of a model at once, the intervals are Bonferroni-widened
so that they hold together at 95 %.

Both claims are checked on every model at once and hold where they hold for every one;
their ``effect`` (:class:`~domaingpt.core.claims.Claim`) is the smallest of the models'.
Both read in-domain prompts only (no out-of-domain corpora pooled); neither is about one
named model.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from domaingpt.context.rundir import study_order
from domaingpt.context.stage import Tables
from domaingpt.core import published
from domaingpt.core.claims import Claim, display, smallest_effect, unmeasured, verdict_of
from domaingpt.core.statistics import bonferroni, first_to_last, mean_ci


def _ci(ci: dict) -> str:
    return f"{ci['mean']:+.3f} [{ci['ci_low']:+.3f}, {ci['ci_high']:+.3f}]"


def cross_fitted_best(excess: pd.DataFrame) -> float:
    """The excess of a model's best head, free of the bias of picking it.

    ``excess``: one row per prompt, one column per head. The head with the largest mean
    excess on the even-numbered prompts is scored on the odd-numbered ones, and the other
    way round; the mean of the two. The largest of many heads' means is above zero even
    where no head reads the previous word (by about two standard errors with a dozen
    heads); a head chosen on other prompts is not, so zero is the null. NaN with fewer
    than two prompts.
    """
    if len(excess) < 2:
        return math.nan
    halves = excess.iloc[0::2], excess.iloc[1::2]
    scores = [test[pick.mean().idxmax()].mean() for pick, test in (halves, halves[::-1])]
    return float(np.mean(scores))


def previous_word_head(per_prompt: pd.DataFrame, prompts: pd.DataFrame) -> Claim:
    """Per model (final checkpoint, in-domain): some head's previous-word share exceeds
    the chance share, its Bonferroni interval (over the model's heads) above zero. The
    effect is the best head's excess over chance, cross-fitted (:func:`cross_fitted_best`)."""
    chance = prompts.set_index("prompt_id")["chance_previous_word"]
    d = per_prompt[
        (per_prompt["domain"] == "in")
        & (per_prompt["iteration"] == per_prompt.groupby("model")["iteration"].transform("max"))
    ]
    flags, parts, numbers, effects = [], [], {}, []
    for model in study_order(d["model"].unique()):
        m = d[d["model"] == model]
        m = m.assign(
            excess=m["share_previous_word"].to_numpy() - chance.loc[m["prompt_id"]].to_numpy()
        )
        heads = list(m.groupby(["layer", "head"], sort=True))
        confidence = bonferroni(len(heads))
        tested = [
            ((int(layer), int(head)), mean_ci(g["excess"].to_numpy(), confidence), g)
            for (layer, head), g in heads
        ]
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
        by_head = m.pivot_table(index="prompt_id", columns=["layer", "head"], values="excess")
        effects.append(cross_fitted_best(by_head))
        numbers[f"{model}_cross_fitted_excess"] = effects[-1]
    if not flags:
        return unmeasured(published.ATTN_PREVIOUS_WORD, "needs in-domain prompts")
    effect = numbers["smallest_cross_fitted_excess"] = smallest_effect(effects)
    evidence = (
        "share of attention on the previous word at the final checkpoint, in-domain prompts "
        "(intervals Bonferroni-widened over each model's heads): " + "; ".join(parts)
    )
    return Claim(
        published.ATTN_PREVIOUS_WORD,
        verdict_of(flags),
        evidence,
        "final checkpoints",
        numbers,
        effect=effect,
    )


def focus(per_prompt: pd.DataFrame) -> Claim:
    """Per model: in-domain attention entropy (mean over layers and heads) lower at the
    final checkpoint than at the first trained one, paired over prompts; the effect is
    the smallest first-minus-final entropy (bits)."""
    d = per_prompt[(per_prompt["domain"] == "in") & (per_prompt["iteration"] > 0)]
    flags, parts, numbers, effects = [], [], {}, []
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
        effects.append(-ci["mean"])
        parts.append(
            f"{display(model)} {wide[first].mean():.3f} → {wide[last].mean():.3f} bits "
            f"(iteration {int(first)} → {int(last)}; change {_ci(ci)})"
        )
        numbers[f"{model}_first"] = float(wide[first].mean())
        numbers[f"{model}_last"] = float(wide[last].mean())
    if not flags:
        return unmeasured(published.ATTN_FOCUS, "needs two trained checkpoints of a model")
    evidence = "in-domain attention entropy, mean over layers and heads: " + "; ".join(parts)
    effect = numbers["smallest_fall_bits"] = smallest_effect(effects)
    return Claim(
        published.ATTN_FOCUS,
        verdict_of(flags),
        evidence,
        "in-domain prompts",
        numbers,
        effect=effect,
    )


def claims(tables: Tables) -> list[Claim]:
    per_prompt, prompts = tables.get("per_prompt"), tables.get("prompts")
    if per_prompt is None or per_prompt.empty or prompts is None:
        why = "no attention results in this run"
        return [
            unmeasured(published.ATTN_PREVIOUS_WORD, why),
            unmeasured(published.ATTN_FOCUS, why),
        ]
    return [previous_word_head(per_prompt, prompts), focus(per_prompt)]

"""The stage's claims: a pure function of its tables, so they can be tested on hand-made
ones. Each is checked per model on paired differences over the same in-domain prompts
(a 95 % interval of the mean difference); verdicts are domaingpt's (holds / partly /
does not hold / not measured): holds for every model, for some, for none."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd

from domaingpt import api

GROWS = "The residual stream grows as training progresses"
DEEPER = "The last layer's residual stream is larger than the embeddings"


def _by_prompt(per_prompt: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """In-domain norms (averaged over layers unless ``layer`` is in ``columns``): one
    column per iteration or layer, one row per (model, prompt)."""
    d = per_prompt[per_prompt["domain"] == "in"]
    return d.groupby(["model", "prompt_id", *columns], sort=True)["norm"].mean()


def _models(per_prompt: pd.DataFrame) -> list[str]:
    """The models with in-domain prompts, in the table's (the study's) order."""
    return list(dict.fromkeys(per_prompt.loc[per_prompt["domain"] == "in", "model"]))


def _changes(
    frame: pd.DataFrame, across: str
) -> Iterator[tuple[str, pd.DataFrame, Any, Any, dict]]:
    """Per model with in-domain prompts: ``(model, wide, first, last, change)``, the paired
    change of the per-prompt norm from the first ``across`` value to the last."""
    wide = _by_prompt(frame, [across]).unstack(across)
    for model in _models(frame):
        w = wide.loc[model].dropna(axis=1, how="all")
        change = api.first_to_last(w)  # None without two columns of paired prompts
        if change is not None:
            yield (model, w, *change)


def grows_with_training(per_prompt: pd.DataFrame) -> api.Claim:
    """Per model: the in-domain norm (mean over layers) rises from the first checkpoint to
    the last, the interval of the paired difference above zero."""
    flags, parts, numbers = [], [], {}
    for model, w, first, last, d in _changes(per_prompt, "iteration"):
        flags.append(d["ci_low"] > 0)
        parts.append(
            f"{model} {w[first].mean():.2f} → {w[last].mean():.2f} (iteration {int(first)} → "
            f"{int(last)}; change {d['mean']:+.2f}, 95 % CI [{d['ci_low']:+.2f}, "
            f"{d['ci_high']:+.2f}], {int(d['n'])} prompts)"
        )
        numbers[f"{model}_change"] = d["mean"]
        numbers[f"{model}_ci_low"] = d["ci_low"]
    if not flags:
        return api.unmeasured(GROWS, "no model has two checkpoints measured on in-domain prompts")
    evidence = "in-domain mean residual-stream norm: " + "; ".join(parts)
    return api.Claim(GROWS, api.verdict_of(flags), evidence, "in-domain prompts", numbers)


def deeper_is_larger(per_prompt: pd.DataFrame) -> api.Claim:
    """Per model, final checkpoint: the last layer's in-domain norm exceeds the
    embeddings', the interval of the paired difference above zero."""
    final = per_prompt[
        per_prompt["iteration"] == per_prompt.groupby("model")["iteration"].transform("max")
    ]
    flags, parts, numbers = [], [], {}
    for model, w, first, last, d in _changes(final, "layer"):
        flags.append(d["ci_low"] > 0)
        parts.append(
            f"{model} layer {int(first)} {w[first].mean():.2f}, layer {int(last)} "
            f"{w[last].mean():.2f} (difference {d['mean']:+.2f}, 95 % CI "
            f"[{d['ci_low']:+.2f}, {d['ci_high']:+.2f}])"
        )
        numbers[f"{model}_difference"] = d["mean"]
        numbers[f"{model}_ci_low"] = d["ci_low"]
    if not flags:
        return api.unmeasured(DEEPER, "no model has two layers measured on in-domain prompts")
    evidence = "in-domain mean residual-stream norm at the final checkpoint: " + "; ".join(parts)
    return api.Claim(DEEPER, api.verdict_of(flags), evidence, "final checkpoint", numbers)


def claims(tables: api.Tables) -> list[api.Claim]:
    per_prompt = tables.get("per_prompt")
    if per_prompt is None or per_prompt.empty:
        why = "no residual-stream norms in this run"
        return [api.unmeasured(GROWS, why), api.unmeasured(DEEPER, why)]
    return [grows_with_training(per_prompt), deeper_is_larger(per_prompt)]

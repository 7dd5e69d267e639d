"""Do the gradient methods rank characters as occlusion does? The study's caution, "a
high gradient norm does not always indicate that a token is truly important", measured.

Occlusion (:class:`.methods.Occlusion`) is the reference: what replacing a character
does to ``log p(true)``. Each prompt's characters are ranked by a gradient method and by
occlusion, and the two rankings compared with Spearman's rank correlation: the signed
methods (input × gradient, integrated gradients) against the signed drop, the unsigned
gradient norm against its size ``|drop|`` (a norm says how much, not which way). The
baseline is ``<unk>`` and, separately, a space (``occlusion = ["unk", "space"]``).

Occlusion costs one forward pass per character, so it runs on ``occlusion_checkpoints``
history checkpoints of each model, spread evenly over the trained ones (iteration > 0),
the last included; the gradient methods' scores at those checkpoints come from the main
attribution loop, and so does the occlusion itself: a checkpoint is occluded with every
baseline in the job that explains it (:mod:`.run`), on the model loaded there.

Tables: ``agreement_prompts`` (one Spearman correlation per model, checkpoint, baseline,
method and prompt) and ``agreement`` (their mean with a 95 % interval, per model,
checkpoint, baseline, method and domain).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from domaingpt.context.prompts import PromptSet, domain_of
from domaingpt.context.rundir import ModelEntry
from domaingpt.core.statistics import mean_ci, spearman
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.model.checkpoint import CheckpointInfo
from domaingpt.model.gpt import GPT
from domaingpt.stages.saliency.faithfulness import replacement_id
from domaingpt.stages.saliency.methods import METHODS, Occlusion, attribute_prompts
from domaingpt.stages.saliency.settings import SaliencySettings

AGREEMENT_KEYS = ["model", "iteration", "baseline", "method", "domain"]


def spread(history: Sequence[CheckpointInfo], k: int) -> list[CheckpointInfo]:
    """``k`` checkpoints spread evenly over the trained ones (iteration > 0; the last always
    included); every one when ``k`` is 0 or at least their number."""
    trained = [c for c in history if c.iteration > 0] or list(history[-1:])
    if k <= 0 or k >= len(trained):
        return trained
    picks = np.unique(np.linspace(0, len(trained) - 1, k).round().astype(int))
    return [trained[i] for i in picks]


@dataclass(frozen=True)
class Job:
    """One occlusion run: a model's checkpoint with one baseline."""

    model: ModelEntry
    info: CheckpointInfo
    baseline: str


def occlude(
    model: GPT,
    baseline: str,
    prompts: PromptSet,
    vocab: AnyVocab,
    device: torch.device | str,
    batch_size: int,
) -> np.ndarray:
    """``(N, T)`` occlusion scores of every prompt through ``model`` with ``baseline``
    (``unk`` or ``space``; 0 on padding)."""
    method = Occlusion(model, replacement_id(vocab, baseline))
    return attribute_prompts(method, prompts, batch_size=batch_size, device=device).values


def prompt_agreement(
    occlusion: np.ndarray, scores: dict[str, np.ndarray], prompts: PromptSet
) -> dict[str, list[float]]:
    """Per method, the Spearman correlation of its scores with occlusion on each prompt
    (against ``|occlusion|`` for unsigned methods)."""
    out: dict[str, list[float]] = {}
    for method, values in scores.items():
        signed = METHODS[method].signed
        rho = []
        for i, p in enumerate(prompts.prompts):
            occ = occlusion[i, : p.length]
            rho.append(spearman(values[i, : p.length], occ if signed else np.abs(occ)))
        out[method] = rho
    return out


def agreement_prompts(
    jobs: Sequence[Job],
    occluded: Sequence[np.ndarray],
    scores: dict[tuple[str, int, str], np.ndarray],
    prompts: PromptSet,
    methods: Sequence[str],
) -> pd.DataFrame:
    """One row per job, gradient method and prompt: the Spearman correlation."""
    gradient = [m for m in methods if m != Occlusion.name]
    parts = []
    for job, occ in zip(jobs, occluded, strict=True):
        it = job.info.iteration
        have = {
            m: scores[(job.model.name, it, m)]
            for m in gradient
            if (job.model.name, it, m) in scores
        }
        for method, rho in prompt_agreement(occ, have, prompts).items():
            parts.append(
                pd.DataFrame(
                    {
                        "model": job.model.name,
                        "iteration": it,
                        "baseline": job.baseline,
                        "method": method,
                        "prompt_id": [p.prompt_id for p in prompts.prompts],
                        "prompt_corpus": [p.corpus for p in prompts.prompts],
                        "domain": [domain_of(p.corpus, job.model.corpus) for p in prompts.prompts],
                        "spearman": rho,
                    }
                )
            )
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def summarise_agreement(per_prompt: pd.DataFrame) -> pd.DataFrame:
    """Mean Spearman correlation with its 95 % interval over prompts, per model,
    checkpoint, baseline, method and domain."""
    rows = []
    if per_prompt.empty:
        return pd.DataFrame(columns=[*AGREEMENT_KEYS, "n", "spearman", "ci_low", "ci_high"])
    for key, g in per_prompt.groupby(AGREEMENT_KEYS, sort=False):
        ci = mean_ci(g["spearman"].to_numpy())
        rows.append(
            {
                **dict(zip(AGREEMENT_KEYS, key, strict=True)),
                "n": ci["n"],
                "spearman": ci["mean"],
                "ci_low": ci["ci_low"],
                "ci_high": ci["ci_high"],
            }
        )
    return pd.DataFrame(rows)


def occlusion_plan(
    models: Sequence[ModelEntry], plan: dict[str, list[CheckpointInfo]], settings: SaliencySettings
) -> list[Job]:
    """The occlusion runs, in the tables' order: per model, each spread checkpoint with
    each baseline."""
    return [
        Job(m, info, baseline)
        for m in models
        for info in spread(plan[m.name], settings.occlusion_checkpoints)
        for baseline in settings.occlusion
    ]


def occlusion_agreement(
    jobs: Sequence[Job],
    occluded: Sequence[np.ndarray],
    prompts: PromptSet,
    scores: dict[tuple[str, int, str], np.ndarray],
    methods: Sequence[str],
) -> tuple[pd.DataFrame, list[dict]]:
    """Compare: the per-prompt agreement table of the occlusion runs ``jobs`` (their
    scores ``occluded``) and the raw occlusion scores (one record per job and prompt, for
    ``occlusion.jsonl``)."""
    table = agreement_prompts(jobs, occluded, scores, prompts, methods)
    raw = [
        {
            "model": job.model.name,
            "iteration": job.info.iteration,
            "baseline": job.baseline,
            "prompt_id": p.prompt_id,
            "raw": [float(f"{v:.6g}") for v in occ[i, : p.length]],
        }
        for job, occ in zip(jobs, occluded, strict=True)
        for i, p in enumerate(prompts.prompts)
    ]
    return table, raw


def occlusion_jobs(
    models: Sequence[ModelEntry], plan: dict[str, list[CheckpointInfo]], settings: SaliencySettings
) -> int:
    """How many occlusion runs there are (for the progress bar)."""
    return len(occlusion_plan(models, plan, settings))

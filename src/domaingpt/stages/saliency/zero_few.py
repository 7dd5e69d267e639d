"""Zero- vs few-shot: the same prompts through a model before and after adaptation.

For every adapted model of the run (:meth:`RunDir.adapted_models`,
``adapt/<source>__to__<target>/<start>/seed<k>/``), the target corpus's prompts are
attributed through the source model at the checkpoint adaptation started from (zero-shot:
the ``source_iteration`` the adapt stage records in the adapted checkpoint) and through
the adapted model's last checkpoint (few-shot). ``scratch`` runs have no source model and
are left out; without adapted models there is no table (``zero_few.csv``).

The answer to the study's open question (:func:`zero_few_answers`): per target prompt,
how alike the zero- and few-shot attributions rank its characters (Spearman), how alike
each ranks them to the target corpus's own model (its final checkpoint), and each
character class's share of the attribution under the three (``zero_few_prompts.csv``,
``zero_few_classes.csv``); the claims test whether adaptation moves the attributions
towards the target's own model and shifts them between classes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from domaingpt.context.prompts import PromptSet
from domaingpt.context.rundir import AdaptedModel, ModelEntry, RunDir
from domaingpt.core.distributed import Ranks, map_ranks
from domaingpt.core.progress import Log
from domaingpt.core.replicates import split_replicate
from domaingpt.core.statistics import spearman
from domaingpt.data.charclass import CLASSES, char_class
from domaingpt.errors import CheckpointError
from domaingpt.model.checkpoint import CheckpointInfo, load_checkpoint
from domaingpt.stages.saliency.aggregate import (
    aggregate,
    long_frame,
    per_character,
    per_prompt,
    shares,
)
from domaingpt.stages.saliency.methods import PromptAttributions, attribute_methods
from domaingpt.stages.saliency.settings import SaliencySettings


@dataclass(frozen=True)
class ZeroFewPair:
    """One adapted model, its target corpus's prompts, and the two checkpoints compared."""

    adapted: AdaptedModel
    prompts: PromptSet
    zero_shot: CheckpointInfo  # the source model where adaptation started
    few_shot: CheckpointInfo  # the adapted model's last checkpoint
    index: tuple[int, ...] = ()  # the prompts' rows in the stage's whole prompt set

    @property
    def keys(self) -> dict[str, Any]:
        a = self.adapted
        return {"source": a.source, "target": a.target, "start": a.start, "seed": a.directory.name}

    def stages(self) -> list[tuple[str, CheckpointInfo]]:
        return [("zero_shot", self.zero_shot), ("few_shot", self.few_shot)]


def zero_few_pairs(
    run: RunDir,
    models: Sequence[ModelEntry],
    prompts: PromptSet,
    settings: SaliencySettings,
    log: Log,
) -> list[ZeroFewPair] | None:
    """The adapted models to compare, resolved before any attribution is computed (None:
    no table, because ``adapted`` is off or the run has no adapted model of ``models``)."""
    if not settings.adapted:
        return None
    names = {m.name for m in models}
    adapted = [a for a in run.adapted_models() if a.source in names]
    if not adapted:
        log(f"note: no adapted models in {run.adapted}; skipping the zero- vs few-shot table")
        return None
    pairs = []
    for a in adapted:
        keep = [i for i, p in enumerate(prompts.prompts) if p.corpus == a.target]
        if not keep:
            log(f"note: no prompts from {a.target!r}; skipping {a.source} -> {a.target}")
            continue
        try:
            zero_shot = run.adaptation_start(a, "saliency")
        except CheckpointError as e:
            log(f"note: skipping {a.directory}: {e}")
            continue
        pairs.append(
            ZeroFewPair(a, prompts.subset(keep), zero_shot, a.checkpoints[-1], tuple(keep))
        )
    return pairs


def zero_few_jobs(
    pairs: Sequence[ZeroFewPair], explained: Collection[Path]
) -> list[tuple[int, str, CheckpointInfo]]:
    """The checkpoints to attribute a pair's prompts through: (pair's position in
    ``pairs``, stage, checkpoint), leaving out those in ``explained`` (checkpoints whose
    attributions of the whole prompt set the stage computes anyway: a zero-shot source
    checkpoint that is one of the explained history checkpoints)."""
    return [
        (k, stage, info)
        for k, pair in enumerate(pairs)
        for stage, info in pair.stages()
        if info.json_path not in explained
    ]


def _attribute_stage(
    job: tuple[int, str, CheckpointInfo],
    pairs: Sequence[ZeroFewPair],
    settings: SaliencySettings,
    device: torch.device,
) -> list[PromptAttributions]:
    """Every method's attributions of a pair's prompts through one checkpoint."""
    k, _, info = job
    model = load_checkpoint(info, device).model.requires_grad_(False)  # inputs' gradients only
    methods = [settings.method(name, model) for name in settings.methods]
    return attribute_methods(
        methods, pairs[k].prompts, batch_size=settings.batch_size, device=device
    )


def zero_few(
    pairs: Sequence[ZeroFewPair],
    settings: SaliencySettings,
    device: torch.device,
    bar: Any,
    ranks: Ranks | None = None,
    *,
    known: Mapping[Path, Mapping[str, PromptAttributions]] | None = None,
    workers: int = 1,
) -> tuple[pd.DataFrame, dict[tuple[int, str, str], PromptAttributions]]:
    """One row per adapted model, stage, method and group (the total, each character
    class, each relative position): mean magnitude, share and lift; and the attributions
    themselves by (pair's position in ``pairs``, stage, method).

    ``known[checkpoint's json_path][method]`` are attributions of the stage's whole
    prompt set already computed (the explained history checkpoints): a pair's rows of them
    (``pair.index``) are used instead of attributing its prompts through that checkpoint
    again. The other checkpoints are attributed side by side over torchrun's ranks (and
    on ``workers`` threads of one torch thread each)."""
    known = known or {}
    jobs = zero_few_jobs(pairs, known)
    done = map_ranks(
        partial(_attribute_stage, pairs=pairs, settings=settings, device=device),
        jobs,
        ranks=ranks,
        workers=workers,
        each=lambda i, r: bar.update(len(r)),
    )
    computed = {(k, stage): res for (k, stage, _), res in zip(jobs, done, strict=True)}
    rows: list[dict] = []
    got: dict[tuple[int, str, str], PromptAttributions] = {}
    for k, pair in enumerate(pairs):
        a, sub = pair.adapted, pair.prompts
        for stage, info in pair.stages():
            if (k, stage) in computed:
                results = computed[(k, stage)]
            else:
                whole = known[info.json_path]
                results = [
                    whole[name].rows(pair.index, sub.max_length) for name in settings.methods
                ]
            for name, res in zip(settings.methods, results, strict=True):
                domains = ["in" if stage == "few_shot" else "out"] * len(sub)
                keys = {
                    "source": a.source,
                    "target": a.target,
                    "start": a.start,
                    "seed": a.directory.name,
                    "method": name,
                    "stage": stage,
                    "checkpoint_iteration": info.iteration,
                }
                rows += _rows(keys, res, sub, domains)
                got[(k, stage, name)] = res
    return pd.DataFrame(rows), got


def _rows(
    keys: dict, res: PromptAttributions, prompts: PromptSet, domains: list[str]
) -> list[dict]:
    """The total row, then one row per character class and per relative position."""
    pp = per_prompt(res.values, res.log_p, prompts, domains)
    keys = {**keys, "log_p_true_mean": float(pp["log_p_true"].mean())}
    rows = [
        {
            **keys,
            "group_kind": "total",
            "group": "all",
            "n": len(prompts),
            "mean_magnitude": float(pp["total_magnitude"].mean()),
            "mean_share": 1.0,
            "lift": 1.0,
        }
    ]
    long = long_frame(res.values, prompts, domains)
    for kind, by in (("class", "char_class"), ("relpos", "relpos")):
        for r in aggregate(long, by).to_dict("records"):
            rows.append(
                {
                    **keys,
                    "group_kind": kind,
                    "group": r[by],
                    "n": r["n_chars"],
                    "mean_magnitude": r["mean_magnitude"],
                    "mean_share": r["mean_share"],
                    "lift": r["lift"],
                }
            )
    return rows


# --- the answer: rank agreement, class shares, towards the target's own model ----------

ZERO_FEW_PROMPT_COLUMNS = [
    "source",
    "target",
    "start",
    "seed",
    "method",
    "own_model",
    "prompt_id",
    "log_p_zero",
    "log_p_few",
    "rho_zero_few",
    "rho_zero_own",
    "rho_few_own",
]


def _class_shares(values: np.ndarray, prompts: PromptSet) -> list[dict[str, float]]:
    """Per prompt: the share of its attribution mass on each character class present."""
    values, lengths = per_character(values, prompts)
    sh = shares(values, lengths)
    out = []
    for i, p in enumerate(prompts.prompts):
        by: dict[str, float] = {}
        n = int(lengths[i])
        for ch, v in zip(p.text[-n:], sh[i, :n], strict=True):
            c = char_class(ch)
            by[c] = by.get(c, 0.0) + float(v)
        out.append(by)
    return out


def zero_few_answers(
    pairs: Sequence[ZeroFewPair],
    got: dict[tuple[int, str, str], PromptAttributions],
    own_scores: dict[tuple[str, str], np.ndarray],
    models: Sequence[ModelEntry],
    methods: Sequence[str],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per adapted model, method and target prompt: Spearman correlations of the zero-shot,
    few-shot and the target's own model's attributions (``zero_few_prompts``); and each
    character class's share of the attribution under the three (``zero_few_classes``).

    ``own_scores[(model, method)]`` are a model's final-checkpoint scores on the whole
    prompt set (the rows ``pair.index`` are the pair's prompts); the own model is the
    trained model of the target corpus, absent (NaN) when it was not explained.
    """
    rows: list[dict] = []
    classes: list[dict] = []
    for k, pair in enumerate(pairs):
        # the target corpus's model of the source's replicate (same initial weights)
        replicate = split_replicate(pair.adapted.source)[1]
        own = next(
            (
                m.name
                for m in models
                if m.corpus == pair.adapted.target and split_replicate(m.name)[1] == replicate
            ),
            "",
        )
        for method in methods:
            zero, few = got.get((k, "zero_shot", method)), got.get((k, "few_shot", method))
            if zero is None or few is None:
                continue
            full = own_scores.get((own, method))
            mine = full[list(pair.index)] if full is not None and pair.index else None
            sides = {"zero": zero.values, "few": few.values}
            if mine is not None:
                sides["own"] = mine
            keys = {**pair.keys, "method": method, "own_model": own if mine is not None else ""}
            by_side = {s: _class_shares(v, pair.prompts) for s, v in sides.items()}
            for i, p in enumerate(pair.prompts.prompts):
                cut = {s: v[i, : p.length] for s, v in sides.items()}

                def rho(a: str, b: str, cut: dict = cut) -> float:
                    return spearman(cut[a], cut[b]) if a in cut and b in cut else np.nan

                rows.append(
                    {
                        **keys,
                        "prompt_id": p.prompt_id,
                        "log_p_zero": float(zero.log_p[i]),
                        "log_p_few": float(few.log_p[i]),
                        "rho_zero_few": rho("zero", "few"),
                        "rho_zero_own": rho("zero", "own"),
                        "rho_few_own": rho("few", "own"),
                    }
                )
                for c in sorted(by_side["zero"][i], key=CLASSES.index):
                    classes.append(
                        {
                            **keys,
                            "prompt_id": p.prompt_id,
                            "char_class": c,
                            **{f"share_{s}": by_side[s][i].get(c, 0.0) for s in by_side},
                        }
                    )
    prompts = pd.DataFrame(rows, columns=ZERO_FEW_PROMPT_COLUMNS)
    return prompts, pd.DataFrame(classes)

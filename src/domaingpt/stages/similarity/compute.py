"""Representation similarity: linear CKA (:mod:`domaingpt.core.cka`, the debiased
estimator) of each layer's residual stream on the same validation prompts, for three
kinds of comparison:

``training``
    consecutive history checkpoints of each model (every prompt): does the
    representation harden as the softmax does?
``domains``
    the final checkpoints of two domain models (every prompt);
``adaptation``
    a source model at the checkpoint its adaptation started from (final or early) against
    the adapted model, on the target corpus's prompts (``prompts = target``) and on the
    source's own (``source``): which start moves its representations more?

Layer 0 is the embeddings, layer ``ℓ`` the output of block ``ℓ``; two models of
different depths (one imported beside the run's own) are compared at the shallower one's
layers, each with the deeper one's at the same relative depth (:func:`layer_pairs`). The residual stream of
every 4th position of each prompt (counted back from its last) is compared; prompts, not
tokens, are the unit of the 95 % jackknife interval (leave one prompt out). The leave-one-
out values are kept (``jackknife.csv``) so that a difference of two CKAs on the same
prompts gets its own interval. Two models that read different vocabularies read the
same characters of each prompt, each in its own tokens; they are compared at the rows
where both have read the same text (:func:`~domaingpt.context.activations.aligned_rows`:
a token of each ends at the same character, at least each prompt's last position), fewer
than two models of one vocabulary share (``n_tokens`` says how many). The forward passes are shared with the ``lens`` and
``attention`` stages (:mod:`domaingpt.context.activations`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from itertools import combinations, pairwise
from typing import Any

import numpy as np
import pandas as pd

from domaingpt.context.activations import Internals, InternalsSettings, Prepared, aligned_rows
from domaingpt.context.prompts import PromptSet
from domaingpt.context.rundir import AdaptedModel, ModelEntry, RunDir
from domaingpt.core.cka import cka_jackknife, jackknife_ci
from domaingpt.core.distributed import Job, Ranks, map_ranks
from domaingpt.core.progress import Log
from domaingpt.core.replicates import split_replicate
from domaingpt.core.settings import finite, setting
from domaingpt.core.threads import map_workers
from domaingpt.model.checkpoint import CheckpointInfo

CKA_COLUMNS = [
    "comparison",
    "kind",
    "model_a",
    "iteration_a",
    "model_b",
    "iteration_b",
    "source",
    "target",
    "start",
    "seed",
    "prompts",
    "layer",
    "cka",
    "ci_low",
    "ci_high",
    "n_tokens",
    "n_prompts",
]
TABLES = ("cka", "jackknife", "hardening")


@dataclass(frozen=True)
class SimilaritySettings(InternalsSettings):
    """Settings of ``domaingpt similarity`` (and a study's ``[similarity]`` table)."""

    adapted: bool = setting(True, "compare source models with their adapted versions")
    harden_at: float = setting(
        0.95, "CKA of consecutive checkpoints above which a layer counts as hardened", cli=False
    )

    def check(self) -> None:
        super().check()
        finite("similarity.harden_at", self.harden_at, 0.0, 1.0)


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a checkpoint's internals, the prompts they were read
    on, and what to call it."""

    model: str
    iteration: int
    rec: Internals
    prompts: PromptSet


def layer_pairs(depth_a: int, depth_b: int) -> list[tuple[int, int]]:
    """The layers compared of models with ``depth_a`` and ``depth_b`` blocks: every
    layer of models of one depth; else the layers of the shallower model, each with the
    deeper model's layer at the same relative depth (the embeddings with the embeddings,
    the last block with the last block). Row ``ℓ`` of the table is the ``ℓ``-th pair."""
    m = min(depth_a, depth_b)
    if m == 0:
        return [(0, 0)]
    return [(round(i * depth_a / m), round(i * depth_b / m)) for i in range(m + 1)]


def _rows(a: Side, b: Side, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The residual rows of ``a`` and ``b`` compared, of the prompts ``keep`` (a mask):
    the same rows when both read one vocabulary, else the positions where both have
    read the same characters (:func:`aligned_rows`)."""
    if a.prompts is b.prompts:
        rows = np.flatnonzero(np.isin(a.rec.resid_prompt, np.flatnonzero(keep)))
        return rows, rows
    ra, rb = aligned_rows(a.rec, a.prompts, b.rec, b.prompts)
    mine = keep[a.rec.resid_prompt[ra]]
    return ra[mine], rb[mine]


class _Comparisons:
    """Collects CKA rows and leave-one-prompt-out values."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self.rows: list[dict[str, Any]] = []
        self.jack: list[pd.DataFrame] = []

    def add(self, kind: str, a: Side, b: Side, prompts: str, keep: np.ndarray, **extra: Any):
        """CKA of ``a`` and ``b`` at every layer over the prompts ``keep`` (a mask; the
        prompts of ``a``, which ``b`` reads in its own vocabulary)."""
        comparison = f"{kind}:{a.model}@{a.iteration}:{b.model}@{b.iteration}:{prompts}"
        if extra:
            comparison += ":" + ":".join(str(extra[k]) for k in ("start", "seed"))
        ra, rb = _rows(a, b, keep)
        ids = np.array([p.prompt_id for p in a.prompts.prompts])
        groups = ids[a.rec.resid_prompt[ra]]
        pairs = layer_pairs(a.rec.resid.shape[0] - 1, b.rec.resid.shape[0] - 1)
        layers = range(len(pairs))
        results = map_workers(
            lambda layer: cka_jackknife(
                a.rec.resid[pairs[layer][0]][ra], b.rec.resid[pairs[layer][1]][rb], groups
            ),
            layers,
            self.workers,
        )
        for layer, (value, labels, loo) in zip(layers, results, strict=True):
            low, high = jackknife_ci(value, loo)
            self.rows.append(
                {
                    "comparison": comparison,
                    "kind": kind,
                    "model_a": a.model,
                    "iteration_a": a.iteration,
                    "model_b": b.model,
                    "iteration_b": b.iteration,
                    "prompts": prompts,
                    "layer": layer,
                    "cka": value,
                    "ci_low": low,
                    "ci_high": high,
                    "n_tokens": len(ra),
                    "n_prompts": len(labels),
                    **extra,
                }
            )
            self.jack.append(
                pd.DataFrame(
                    {"comparison": comparison, "layer": layer, "prompt_id": labels, "cka": loo}
                )
            )

    def tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        cka = pd.DataFrame(self.rows).reindex(columns=CKA_COLUMNS)
        jack = pd.concat(self.jack, ignore_index=True) if self.jack else pd.DataFrame()
        return cka, jack


def hardening(cka: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per model and layer: the first checkpoint after which every consecutive pair's
    CKA stays at or above ``threshold`` (NaN: not reached by the last pair)."""
    rows = []
    t = cka[cka["kind"] == "training"]
    for (model, layer), g in t.groupby(["model_a", "layer"], sort=False):
        g = g.sort_values("iteration_b")
        below = np.flatnonzero(g["cka"].to_numpy() < threshold)
        if not len(below):
            at = g["iteration_a"].iloc[0]
        elif below[-1] == len(g) - 1:
            at = np.nan
        else:
            at = g["iteration_b"].iloc[below[-1]]
        rows.append(
            {
                "model": model,
                "layer": layer,
                "threshold": threshold,
                "hardened_at": at,
                "last_cka": float(g["cka"].iloc[-1]),
            }
        )
    return pd.DataFrame(rows, columns=["model", "layer", "threshold", "hardened_at", "last_cka"])


Rows = tuple[list[dict[str, Any]], list[pd.DataFrame]]


def _training(model: ModelEntry, job: Job, ready: Prepared, settings: SimilaritySettings) -> Rows:
    """CKA of each pair of consecutive history checkpoints of one model."""
    got = _Comparisons(settings.workers)
    history, prompts = model.checkpoints, ready.prompts(model.name)
    sides = [
        Side(model.name, info.iteration, rec, prompts)
        for info, rec in zip(history, ready.read(model.name, history, settings, job), strict=True)
    ]
    every = np.ones(len(prompts), dtype=bool)
    for a, b in pairwise(sides):
        got.add("training", a, b, "all", every)
    return got.rows, got.jack


def _final(model: ModelEntry, job: Job, ready: Prepared, settings: SimilaritySettings) -> Side:
    info = model.checkpoints[-1]
    [rec] = ready.read(model.name, [info], settings, job)
    return Side(model.name, info.iteration, rec, ready.prompts(model.name))


def _domains(
    pair: tuple[ModelEntry, ModelEntry], job: Job, ready: Prepared, settings: SimilaritySettings
) -> Rows:
    """CKA of two domain models' final checkpoints (at the characters both have read,
    when they read different vocabularies)."""
    got = _Comparisons(settings.workers)
    a, b = (_final(m, job, ready, settings) for m in pair)
    got.add("domains", a, b, "all", np.ones(ready.n_prompts, dtype=bool))
    return got.rows, got.jack


def _adaptation(
    todo: tuple[AdaptedModel, CheckpointInfo, str],
    job: Job,
    ready: Prepared,
    settings: SimilaritySettings,
) -> Rows:
    """CKA of a source model where its adaptation started and the adapted model, on the
    target's prompts and on the source's own."""
    a, start, source_corpus = todo
    got = _Comparisons(settings.workers)
    prompts = ready.prompts(a.source)  # an adapted model reads its source's vocabulary
    end, begin = ready.read(a.source, [a.checkpoints[-1], start], settings, job)
    src = Side(a.source, start.iteration, begin, prompts)
    dst = Side(f"{a.source}→{a.target}", a.checkpoints[-1].iteration, end, prompts)
    extra = {"source": a.source, "target": a.target, "start": a.start, "seed": a.directory.name}
    corpora = np.array([p.corpus for p in prompts.prompts])
    for label, corpus in (("target", a.target), ("source", source_corpus)):
        keep = corpora == corpus
        if keep.sum() >= 4:
            got.add("adaptation", src, dst, label, keep, **extra)
    return got.rows, got.jack


def _compare(
    run: RunDir,
    ready: Prepared,
    settings: SimilaritySettings,
    got: _Comparisons,
    log: Log,
    ranks: Ranks,
) -> None:
    """Every comparison, in order: training, domains, adaptation. Under torchrun each is a
    job on the rank that reads its first model (where the lens stage left its passes)."""
    index = {m.name: i for i, m in enumerate(ready.models)}
    parts = map_ranks(
        partial(_training, ready=ready, settings=settings),
        ready.models,
        ranks=ranks,
        log=log,
        with_job=True,
    )
    # domain models are compared within a replicate (the models that share initial weights)
    pairs = [
        (a, b)
        for a, b in combinations(ready.models, 2)
        if split_replicate(a.name)[1] == split_replicate(b.name)[1]
    ]
    parts += map_ranks(
        partial(_domains, ready=ready, settings=settings),
        pairs,
        ranks=ranks,
        log=log,
        owners=[index[a.name] for a, _ in pairs],
        with_job=True,
    )
    if settings.adapted:
        names = {m.name: m.corpus for m in ready.models}
        adapted = [a for a in run.adapted_models() if a.source in names]
        starts = [
            run.adaptation_start(a, "similarity") for a in adapted
        ]  # every record checked before any work
        jobs = [(a, s, names[a.source]) for a, s in zip(adapted, starts, strict=True)]
        parts += map_ranks(
            partial(_adaptation, ready=ready, settings=settings),
            jobs,
            ranks=ranks,
            log=log,
            owners=[index[a.source] for a in adapted],
            with_job=True,
        )
    for rows, jack in parts:
        got.rows += rows
        got.jack += jack

"""Which checkpoints are sampled: every history checkpoint of the trained models, and for
the adapted models their last checkpoint ("after") and the one they started from
("before")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from domaingpt.context.rundir import AdaptedModel, RunDir
from domaingpt.core.progress import Log
from domaingpt.model.checkpoint import CheckpointInfo, list_checkpoints
from domaingpt.stages.quality.settings import QualitySettings


@dataclass(frozen=True)
class Target:
    """One checkpoint to sample: a trained model's or an adapted model's."""

    kind: str  # "train" | "adapt"
    model: str  # corpus name, or "<source>__to__<target>/<start>/seed<k>"
    info: CheckpointInfo
    corpus: str  # the corpus its samples are compared with (own / adaptation target)
    seeds: tuple[int, ...]
    source: str = ""
    target: str = ""
    start: str = ""
    adapt_seed: int | None = None
    phase: str = ""  # adapted: before / after
    val_loss: float | None = None  # overrides the checkpoint's own val_loss

    def identity(self, seed: int) -> dict[str, Any]:
        """The columns that say which sample a row of the stage's tables is about."""
        ident: dict[str, Any] = {"kind": self.kind, "model": self.model}
        if self.kind == "adapt":
            ident.update(
                source=self.source,
                target=self.target,
                start=self.start,
                adapt_seed=self.adapt_seed,
                phase=self.phase,
            )
        own = self.val_loss if self.val_loss is not None else as_float(self.info.meta.val_loss)
        ident.update(corpus=self.corpus, iteration=self.info.iteration, val_loss=own, seed=seed)
        return ident


def as_float(value: Any) -> float:
    """``value`` as a float; NaN when it is missing or not a number."""
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def model_targets(run: RunDir, settings: QualitySettings) -> list[Target]:
    """Every history checkpoint (or those at ``settings.iterations``) of the trained
    models (``settings.models``, else all of them in the study's order)."""
    if not settings.models and not run.trained_models():
        return []  # the caller says what to train (there may be adapted models alone)
    targets = []
    for name in run.model_names(settings.models):
        history = list_checkpoints(run.model(name) / "checkpoints", "iter")
        if settings.iterations:
            wanted = set(settings.iterations)
            history = [c for c in history if c.iteration in wanted]
        targets += [Target("train", name, info, name, tuple(settings.seeds)) for info in history]
    return targets


def adapt_targets(run: RunDir, settings: QualitySettings, log: Log) -> list[Target]:
    """The last checkpoint of every adapted model ("after"), and once per (pair, start)
    the checkpoint it started from ("before"): the adapted directory's iteration 0 if it
    has one, else the source model's checkpoint at the ``source_iteration`` its record
    names. A start from scratch has no before."""
    if not settings.adapt or settings.adapt_samples == 0:
        return []
    adapted = run.adapted_models(scratch=True)
    if not adapted:
        log(f"no adapted models in {run.adapted}: skipping the after-adaptation measures")
        return []
    seeds = tuple(settings.seeds[: settings.adapt_samples])
    targets = []
    for _, group in groupby(adapted, key=lambda m: (m.pair, m.start)):
        before: Target | None = None
        for m in group:
            history = m.checkpoints
            targets.append(_after(m, history[-1], seeds))
            if before is None:
                before = _before(run, m, history, tuple(settings.seeds))
        if before is not None:
            targets.append(before)
    log(f"found {len(adapted)} adapted models in {run.adapted}")
    return targets


def _after(m: AdaptedModel, last: CheckpointInfo, seeds: tuple[int, ...]) -> Target:
    label = f"{m.pair}/{m.start}/{m.directory.name}"
    return Target(
        "adapt", label, last, m.target, seeds, m.source, m.target, m.start, m.seed, "after"
    )


def _before(
    run: RunDir, m: AdaptedModel, history: list[CheckpointInfo], seeds: tuple[int, ...]
) -> Target | None:
    """The checkpoint ``m`` started from, with the target loss its adaptation measured
    there, shared by every adaptation seed of its (pair, start)."""
    info = start_checkpoint(run, m.source, history)
    if info is None:
        return None
    record = history[-1].meta.adapt or {}
    return Target(
        "adapt",
        f"{m.pair}/{m.start}/before",
        info,
        m.target,
        seeds,
        m.source,
        m.target,
        m.start,
        None,
        "before",
        as_float(record.get("target_loss_step0")),
    )


def start_checkpoint(
    run: RunDir, source: str, history: list[CheckpointInfo]
) -> CheckpointInfo | None:
    """The checkpoint an adaptation started from (None for a start from scratch)."""
    if len(history) > 1 and history[0].iteration == 0:
        return history[0]
    iteration = (history[-1].meta.adapt or {}).get("source_iteration")
    if iteration is None:
        return None
    for info in list_checkpoints(run.model(source) / "checkpoints", "iter"):
        if info.iteration == iteration:
            return info
    return None

"""The study's stages, in the order they run: a plain list of imported stage values.

``lens``, ``similarity`` and ``attention`` read the same forward pass per checkpoint
(the run's :class:`~domaingpt.context.activations.ActivationCache`, ``ctx.activations``,
keeps it for the stages after the first).

A user's stages (``[study] stages = [...]`` in a study file) run after the built-in
analyses and before the report, which reads them all.
"""

from __future__ import annotations

from domaingpt.context.stage import Stage
from domaingpt.stages import (
    adapt,
    attention,
    evaluate,
    lens,
    quality,
    report,
    saliency,
    similarity,
    softmax,
    stats,
    train,
)

BUILTIN_STAGES: tuple[Stage, ...] = (
    stats.stage,
    train.stage,
    evaluate.stage,
    adapt.stage,
    softmax.stage,
    lens.stage,
    similarity.stage,
    saliency.stage,
    attention.stage,
    quality.stage,
)
REPORT: Stage = report.stage
#: The stage the study's ``[model]``/``[train]``/``[data]`` tables and preset configure.
TRAIN: Stage = train.stage
#: The stage whose zero-shot matrix lists a run (``domaingpt runs``).
EVALUATE: Stage = evaluate.stage

"""The study's stages, in the order they run: a plain list of imported stage values.

A user's stages (``[study] stages = [...]`` in a study file) run after the built-in
analyses and before the report, which reads them all.
"""

from __future__ import annotations

from domaingpt.core.stage import Stage
from domaingpt.stages import adapt, evaluate, probe, quality, report, saliency, stats, train

BUILTIN_STAGES: tuple[Stage, ...] = (
    stats.stage,
    train.stage,
    evaluate.stage,
    adapt.stage,
    probe.stage,
    saliency.stage,
    quality.stage,
)
REPORT: Stage = report.stage

"""What the samples show (the study's judgements by eye, as numbers): word formation,
layout, repetitiveness and style along training and after adaptation (see :mod:`.compute`,
:mod:`.textmetrics`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from domaingpt.core.stage import Stage, StageContext
from domaingpt.stages.quality.claims import claims
from domaingpt.stages.quality.compute import (
    SampleQualitySettings,
    load_sample_quality,
    run_sample_quality,
)
from domaingpt.stages.quality.section import section


def run(ctx: StageContext, settings: SampleQualitySettings) -> dict[str, Path]:
    return run_sample_quality(ctx.run, settings, progress=ctx.progress, log=ctx.log)


def _summary(written: Mapping[str, Path]) -> str:
    return written["summary"].read_text(encoding="utf-8")


stage = Stage(
    name="quality",
    title="sample quality metrics",
    settings=SampleQualitySettings,
    run=run,
    load=load_sample_quality,
    claims=claims,
    section=section,
    needs=("train",),
    uses=("adapt",),
    help="measure what the samples show (spelling, layout, repetitiveness, style) along "
    "training and after adaptation, and check the study's judgements",
    summary=_summary,
    section_title="Sample quality",
)

__all__ = ["SampleQualitySettings", "load_sample_quality", "run_sample_quality", "stage"]

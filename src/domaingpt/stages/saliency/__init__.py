"""Part 4 of the study: gradient-based attributions of the next character to each input
character, by class, position, checkpoint, domain, zero- vs few-shot, with a deletion
test of faithfulness (see :mod:`.compute`).
"""

from __future__ import annotations

from pathlib import Path

from domaingpt.core.stage import Stage, StageContext
from domaingpt.stages.saliency.claims import claims
from domaingpt.stages.saliency.compute import (
    METHODS,
    Attribution,
    GradientNorm,
    InputXGradient,
    IntegratedGradients,
    SaliencySettings,
    check_methods,
    load_saliency,
    run_saliency,
)
from domaingpt.stages.saliency.section import section


def run(ctx: StageContext, settings: SaliencySettings) -> dict[str, Path]:
    return run_saliency(ctx.run, settings, progress=ctx.progress, log=ctx.log)


stage = Stage(
    name="saliency",
    title="gradient-based interpretability",
    settings=SaliencySettings,
    run=run,
    load=load_saliency,
    claims=claims,
    section=section,
    needs=("train",),
    uses=("adapt",),
    help="gradient-based attributions per input character, by class, position, checkpoint",
    section_title="Interpretability: gradient-based attributions",
)

__all__ = [
    "METHODS",
    "Attribution",
    "GradientNorm",
    "InputXGradient",
    "IntegratedGradients",
    "SaliencySettings",
    "check_methods",
    "load_saliency",
    "run_saliency",
    "stage",
]

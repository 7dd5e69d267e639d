"""Part 4 of the study: gradient-based attributions of the next character to each input
character, by class, position, checkpoint, domain, zero- vs few-shot, with a deletion
test of faithfulness.

The modules, in the order the stage uses them: :mod:`.methods` (the attribution methods),
:mod:`.aggregate` (shares, lifts, tables by class and position), :mod:`.faithfulness`
(the deletion test), :mod:`.zero_few` (through the adapted models), :mod:`.results` (the
stage end to end), :mod:`.claims`, :mod:`.figures`, :mod:`.heatmap` and :mod:`.section`.
"""

from __future__ import annotations

from domaingpt.context.stage import Stage
from domaingpt.stages.saliency.aggregate import (
    RELPOS,
    aggregate,
    checkpoint_summary,
    long_frame,
    per_prompt,
    relative_positions,
    shares,
)
from domaingpt.stages.saliency.claims import claims
from domaingpt.stages.saliency.faithfulness import deletion_test, faithfulness_rows
from domaingpt.stages.saliency.methods import (
    METHODS,
    Attribution,
    GradientNorm,
    InputXGradient,
    IntegratedGradients,
    Occlusion,
    attribute_prompts,
    check_methods,
    make_method,
    quadrature,
    target_log_prob,
)
from domaingpt.stages.saliency.results import OPTIONAL, TABLES, read_attributions, run
from domaingpt.stages.saliency.section import section
from domaingpt.stages.saliency.settings import SaliencySettings

stage = Stage(
    name="saliency",
    title="gradient-based interpretability",
    settings=SaliencySettings,
    run=run,
    tables=TABLES,
    optional=OPTIONAL,
    claims=claims,
    section=section,
    needs=("train",),
    uses=("adapt",),
    help="gradient-based attributions per input character, by class, position, checkpoint",
    section_title="Interpretability: gradient-based attributions",
)

__all__ = [
    "METHODS",
    "RELPOS",
    "Attribution",
    "GradientNorm",
    "InputXGradient",
    "IntegratedGradients",
    "Occlusion",
    "SaliencySettings",
    "aggregate",
    "attribute_prompts",
    "check_methods",
    "checkpoint_summary",
    "claims",
    "deletion_test",
    "faithfulness_rows",
    "long_frame",
    "make_method",
    "per_prompt",
    "quadrature",
    "read_attributions",
    "relative_positions",
    "shares",
    "stage",
    "target_log_prob",
]

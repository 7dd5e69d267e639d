"""The logit lens along training: at which depth each model's next-character prediction
forms, whether that moves with training, and whether out-of-domain prompts resolve later.

Every history checkpoint of every model reads the validation prompts of every corpus;
each layer's residual stream goes through the final LayerNorm and the head. The forward
pass is shared with the ``similarity`` and ``attention`` stages
(:mod:`domaingpt.context.activations`). Tables in ``lens/``: ``per_prompt``, ``layers`` and
``formation`` (see :mod:`.compute`).
"""

from __future__ import annotations

from domaingpt.context.stage import Stage
from domaingpt.stages.lens.claims import claims
from domaingpt.stages.lens.compute import (
    TABLES,
    LensSettings,
    formation_depth,
    formation_summary,
    layer_summary,
    per_prompt_frame,
)
from domaingpt.stages.lens.results import load, run
from domaingpt.stages.lens.section import section

stage = Stage(
    name="lens",
    title="the logit lens along training",
    settings=LensSettings,
    run=run,
    tables=TABLES,
    load=load,
    claims=claims,
    section=section,
    needs=("train",),
    help="the logit lens at every checkpoint: where in the model each prediction forms",
    section_title="The logit lens: where in the model the prediction forms",
)

__all__ = [
    "LensSettings",
    "claims",
    "formation_depth",
    "formation_summary",
    "layer_summary",
    "per_prompt_frame",
    "stage",
]

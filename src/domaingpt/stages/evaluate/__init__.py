"""Part 2 of the study, zero-shot: every model's loss on every corpus (the loss matrix).

Tables in ``evaluate/``: ``zero_shot`` (one row per model, checkpoint iteration and
corpus, with a bootstrap interval over windows) and ``matrix`` (final checkpoints, models
× corpora); ``zero_shot.md`` lays it out like the study's table, the study's beside it.
"""

from __future__ import annotations

from domaingpt.context.stage import Stage
from domaingpt.stages.evaluate.claims import claims
from domaingpt.stages.evaluate.compute import final_zero_shot, loss_summary, zero_shot_table
from domaingpt.stages.evaluate.results import load, run
from domaingpt.stages.evaluate.section import section
from domaingpt.stages.evaluate.settings import EvaluateSettings

stage = Stage(
    name="evaluate",
    title="zero-shot loss matrix",
    settings=EvaluateSettings,
    run=run,
    tables=("zero_shot",),
    load=load,
    claims=claims,
    section=section,
    needs=("train",),
    aliases=("eval",),
    help="zero-shot loss of every model checkpoint on every corpus (the loss matrix)",
    summary="zero_shot_md",
    headline="zero_shot.png",
    section_title="Cross-domain evaluation: zero-shot loss matrix",
)

__all__ = [
    "EvaluateSettings",
    "final_zero_shot",
    "loss_summary",
    "stage",
    "zero_shot_table",
]

"""Part 2 of the study, zero-shot: every model's loss on every corpus (the loss matrix).

Tables in ``eval/``: ``zero_shot`` (one row per model, checkpoint iteration and corpus,
with a bootstrap interval over windows) and ``matrix`` (final checkpoints, models ×
corpora); ``zero_shot.md`` lays it out like the study's table, the study's beside it.
"""

from __future__ import annotations

from pathlib import Path

from domaingpt.context.stage import Stage, StageContext
from domaingpt.stages.evaluate.claims import claims
from domaingpt.stages.evaluate.matrix import (
    EvalSettings,
    final_zero_shot,
    load_evaluate,
    loss_summary,
    run_evaluate,
    zero_shot_table,
)
from domaingpt.stages.evaluate.section import section


def run(ctx: StageContext, settings: EvalSettings) -> dict[str, Path]:
    return run_evaluate(ctx.run, settings, progress=ctx.progress, log=ctx.log, ranks=ctx.ranks)


stage = Stage(
    name="evaluate",
    title="zero-shot loss matrix",
    settings=EvalSettings,
    run=run,
    load=load_evaluate,
    claims=claims,
    section=section,
    needs=("train",),
    subdir="eval",
    help="zero-shot loss of every model checkpoint on every corpus (the loss matrix)",
    summary="zero_shot_md",
    section_title="Cross-domain evaluation: zero-shot loss matrix",
)

__all__ = [
    "EvalSettings",
    "final_zero_shot",
    "load_evaluate",
    "loss_summary",
    "run_evaluate",
    "stage",
    "zero_shot_table",
]

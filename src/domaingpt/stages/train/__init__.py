"""The train stage: one character-level GPT per corpus of the study, with a checkpoint
history, samples along training and loss curves (see :mod:`domaingpt.training`).

Tables (read from each ``models/<corpus>/``, the run's model store): ``metrics``,
``samples``, ``summary``; its own folder ``train/`` holds its settings and claims.
"""

from __future__ import annotations

from domaingpt.context.stage import Stage
from domaingpt.stages.train.claims import claims
from domaingpt.stages.train.results import TrainSettings, load, run
from domaingpt.stages.train.section import section

stage = Stage(
    name="train",
    title="training (one model per corpus)",
    settings=TrainSettings,
    run=run,
    load=load,
    claims=claims,
    read_unfinished=True,
    section=section,
    needs=(),
    help="train one model per corpus of the study",
    section_title="Training: loss curves and samples",
    command=False,
)

__all__ = ["TrainSettings", "load", "run", "stage"]

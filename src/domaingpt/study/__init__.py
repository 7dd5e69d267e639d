"""The whole study in one command: a study file, its stages, and their cache.

``domaingpt run [study.toml]`` runs, in order::

    stats → train → evaluate → adapt → probe → saliency → quality → [yours] → report

See :mod:`.spec` (the study file), :mod:`.runner` (running and caching the stages),
:mod:`.load` (reading a run back: ``Study.load("runs/cpu")["evaluate"]["zero_shot"]``) and
:mod:`.pipeline` (the list of stages).
"""

from domaingpt.context.records import StageRecord, StageStatus
from domaingpt.study.load import Study
from domaingpt.study.runner import StageOutcome, StudyResult, run_study, versions
from domaingpt.study.spec import STUDY_PRESETS, StageRef, StudySpec, load_study

__all__ = [
    "STUDY_PRESETS",
    "StageOutcome",
    "StageRecord",
    "StageRef",
    "StageStatus",
    "Study",
    "StudyResult",
    "StudySpec",
    "load_study",
    "run_study",
    "versions",
]

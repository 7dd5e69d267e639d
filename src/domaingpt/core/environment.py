"""The ``DOMAINGPT_*`` environment variables, checked before a command writes anything.

Each variable is read where it is used; :func:`check_environment` reads them all first,
so a bad value is one ``error:`` line before the first file is written (not a refused
``train`` that leaves a half-made model directory, nor a study that stops at its train
stage after the statistics).
"""

from __future__ import annotations

from domaingpt.core import faults
from domaingpt.core.device import autocast_override
from domaingpt.core.distributed import STUDY_TIMEOUT_ENV, TIMEOUT_ENV, env_seconds


def check_environment() -> None:
    """Raise a ConfigError naming the first ``DOMAINGPT_*`` variable with a bad value."""
    autocast_override()
    faults.check()
    env_seconds(TIMEOUT_ENV, 1)
    env_seconds(STUDY_TIMEOUT_ENV, 1)

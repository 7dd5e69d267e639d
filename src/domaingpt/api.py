"""The public API in one module: what a user's own stage imports, and what the package
root offers beyond re-exports (a model in one call, a stage in one call; see
:mod:`domaingpt`, which imports this module only when one of them is used).

A stage of your own (``examples/norms_stage``) needs nothing else::

    from domaingpt import api

    stage = api.Stage(name="norms", title="...", settings=NormSettings, run=run,
                      tables=("norms",), claims=claims, section=section, needs=("train",))

The names below are the stage contract (:class:`Stage`, its context, its results and
view), settings (:class:`StageSettings`, :func:`setting`, :func:`positive`), claims and
their statistics, the report's section and figures, a run's models and prompts, and the
model itself. Everything else in the package is internal and may move.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from domaingpt.context.prompts import (
    PromptGroup,
    PromptSet,
    build_prompt_groups,
    build_prompt_set,
    domain_of,
)
from domaingpt.context.rundir import ModelEntry, RunDir
from domaingpt.context.stage import Results, Stage, StageContext, StageView, Tables
from domaingpt.context.stage import run_stage as _run_stage
from domaingpt.core.claims import Claim, Verdict, display, unmeasured, verdict_of
from domaingpt.core.device import pick_device
from domaingpt.core.progress import Log, quiet_log
from domaingpt.core.settings import StageSettings, positive, setting
from domaingpt.core.statistics import first_to_last, mean_ci
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.model.checkpoint import CheckpointInfo, Loaded, find_checkpoint, load_checkpoint
from domaingpt.model.gpt import GPT
from domaingpt.report.document import Section
from domaingpt.report.plotting import (
    DOMAIN_STYLE,
    figure_style,
    grid,
    iteration_axis,
    save_figure,
)

__all__ = [
    "DOMAIN_STYLE",
    "GPT",
    "CheckpointInfo",
    "Claim",
    "ConfigError",
    "DomainGPTError",
    "Loaded",
    "Log",
    "ModelEntry",
    "PromptGroup",
    "PromptSet",
    "Results",
    "RunDir",
    "Section",
    "Stage",
    "StageContext",
    "StageSettings",
    "StageView",
    "Tables",
    "Verdict",
    "build_prompt_groups",
    "build_prompt_set",
    "display",
    "domain_of",
    "figure_style",
    "find_checkpoint",
    "first_to_last",
    "grid",
    "iteration_axis",
    "load_checkpoint",
    "load_model",
    "mean_ci",
    "pick_device",
    "positive",
    "quiet_log",
    "run_stage",
    "save_figure",
    "setting",
    "unmeasured",
    "verdict_of",
]


def load_model(
    target: str | Path, iteration: int | str | None = "final", device: torch.device | str = "cpu"
) -> Loaded:
    """A trained model: ``loaded.model`` (a ``GPT`` in eval mode), ``loaded.vocab``,
    ``loaded.info`` (its checkpoint record).

    ``target``: a model folder (``runs/cpu/models/shakespeare``), its ``checkpoints``
    folder or one checkpoint file; ``iteration``: ``"final"`` (the newest history
    checkpoint), a number, or ``None`` for the newest of any kind — as ``domaingpt
    sample`` reads them.
    """
    return load_checkpoint(find_checkpoint(target, iteration), device)


def run_stage(
    name: str,
    out: str | Path,
    *,
    progress: bool = False,
    log: Log = quiet_log,
    **settings: Any,
) -> tuple[dict[str, Path], list[Claim]]:
    """Run one stage on the run directory ``out``, as ``domaingpt NAME --out OUT`` does:
    what it wrote (name -> path) and its claims, checked.

    The stage's inputs must be there (the models, the earlier stages' files: run the
    study first, ``domaingpt.run_study``). ``settings`` are the stage's settings, the
    options of its command (``run_stage("evaluate", "runs/cpu", bootstrap=0)``); the
    run directory is locked meanwhile.
    """
    from domaingpt.study.pipeline import BUILTIN_STAGES, REPORT

    stages = {n: s for s in BUILTIN_STAGES if s.command for n in (s.name, *s.aliases)}
    if name not in stages:
        raise DomainGPTError(
            f"no stage {name!r} runs on its own: choose one of "
            f"{', '.join(s.name for s in BUILTIN_STAGES if s.command)} "
            "(or run the whole study with domaingpt.run_study)"
        )
    stage = stages[name]
    try:
        chosen = stage.settings(**settings)
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{stage.name}: {e}") from None
    run = RunDir(Path(out))
    run.check_writable()
    with run.lock():
        ctx = StageContext(
            run=run, stage=stage, progress=progress, log=log, stages=(*BUILTIN_STAGES, REPORT)
        )
        return _run_stage(ctx, chosen)

"""What the package root offers beyond re-exports: a model in one call, a stage in one
call (see :mod:`domaingpt`, which imports this module only when one of them is used)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from domaingpt.context.rundir import RunDir
from domaingpt.context.stage import StageContext
from domaingpt.context.stage import run_stage as _run_stage
from domaingpt.core.claims import Claim
from domaingpt.core.progress import Log, quiet_log
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.model.checkpoint import Loaded, find_checkpoint, load_checkpoint


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
    from domaingpt.study.pipeline import BUILTIN_STAGES

    stages = {s.name: s for s in BUILTIN_STAGES if s.command}
    if name not in stages:
        raise DomainGPTError(
            f"no stage {name!r} runs on its own: choose one of {', '.join(stages)} "
            "(or run the whole study with domaingpt.run_study)"
        )
    stage = stages[name]
    try:
        chosen = stage.settings(**settings)
    except (TypeError, ValueError) as e:  # ConfigError passes through as it is
        raise ConfigError(f"{stage.settings.section()}: {e}") from None
    run = RunDir(Path(out))
    run.check_writable()
    with run.lock():
        ctx = StageContext(run=run, stage=stage, progress=progress, log=log)
        return _run_stage(ctx, chosen)

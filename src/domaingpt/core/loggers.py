"""Where a training run's scalars go besides its own files: TensorBoard, Weights & Biases.

``train.loggers`` (and ``adapt.loggers``) name backends of :data:`LOGGERS`:

``csv``          the files domaingpt always writes (``metrics.jsonl`` of a model,
                 ``curve.jsonl`` and ``curves.csv`` of an adaptation): the stages read
                 them, so they are written whichever loggers are named; nothing more;
``tensorboard``  event files in ``<dir>/tensorboard/`` (``torch.utils.tensorboard``);
``wandb``        a Weights & Biases run in ``<dir>/wandb/``, offline unless ``WANDB_MODE``
                 says otherwise or an API key and the W&B server are both there.

A backend is a class with ``log(step, scalars)`` and ``close()``; :func:`open_loggers`
opens the named ones for one run and returns them as one such object. The optional
packages are imported only when a backend is named, and :func:`require_loggers` checks
them before anything is written (a missing one is a one-line error naming the extra).
"""

from __future__ import annotations

import importlib
import netrc
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from domaingpt.errors import ConfigError

#: The extra that installs every optional logger backend.
EXTRA = "pip install 'domaingpt[loggers]'"
#: How long the W&B server may take to answer before a run is logged offline.
WANDB_PROBE_SECONDS = 3.0


class MetricLogger(Protocol):
    """One backend's view of one run: scalars at a step, then closed once."""

    def log(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunInfo:
    """What a backend knows of the run it logs.

    ``directory``: the model (or adaptation run) directory its files go under; ``name``:
    how the run is shown (``shakespeare``, ``shakespeare→math final@500 seed0``); ``group``:
    ``train`` or ``adapt``; ``resumed_from``: the iteration a resumed run continues after
    (None: from the start); the steps past it are logged again.
    """

    directory: Path
    name: str
    group: str
    config: dict[str, Any] = field(default_factory=dict)
    resumed_from: int | None = None


class CsvLogger:
    """``csv``: the JSONL/CSV files the trainer and the adapt stage write anyway."""

    def __init__(self, run: RunInfo) -> None:
        self.run = run

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """``tensorboard``: one event file per session in ``<dir>/tensorboard/``."""

    def __init__(self, run: RunInfo) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # The steps after the checkpoint a run resumes from (all of them when it starts
        # afresh) are logged again: TensorBoard drops what earlier sessions logged there.
        purge = 0 if run.resumed_from is None else run.resumed_from + 1
        self.writer = SummaryWriter(str(run.directory / "tensorboard"), purge_step=purge)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """``wandb``: a W&B run in ``<dir>/wandb/`` (offline without a key or a server)."""

    def __init__(self, run: RunInfo) -> None:
        import wandb

        kwargs: dict[str, Any] = {}
        if not os.environ.get("WANDB_MODE"):
            kwargs["mode"] = "online" if wandb_reachable() else "offline"
        # No console capture (the command's own output stays as it is), no system stats,
        # and no symbolic links (a run directory refuses them: see RunDir.refuse_links).
        settings = wandb.Settings(
            console="off", silent=True, disable_git=True, x_disable_stats=True, symlink=False
        )
        self.folder = run.directory / "wandb"
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "domaingpt"),
            name=run.name,
            group=run.group,
            job_type=run.group,
            dir=str(run.directory),
            config=run.config,
            settings=settings,
            **kwargs,
        )
        _drop_links(self.folder)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        self.run.finish()
        _drop_links(self.folder)


def _drop_links(folder: Path) -> None:
    """wandb-core links each run's ``logs/debug-core.log`` to its own cache, outside the
    run directory, whatever the settings say: drop the links (never their targets)."""
    for parent, dirs, files in os.walk(folder):  # never follows links
        for name in dirs + files:
            path = Path(parent) / name
            if path.is_symlink():
                path.unlink()


@dataclass(frozen=True)
class Backend:
    """A logger name, the modules it needs (an :data:`EXTRA`) and its class."""

    name: str
    modules: tuple[str, ...]
    make: Callable[[RunInfo], MetricLogger]
    help: str


#: Every logger ``train.loggers`` may name.
LOGGERS: dict[str, Backend] = {
    b.name: b
    for b in (
        Backend("csv", (), CsvLogger, "metrics.jsonl / curves.csv (always written)"),
        Backend("tensorboard", ("tensorboard",), TensorBoardLogger, "<dir>/tensorboard/"),
        Backend("wandb", ("wandb",), WandbLogger, "<dir>/wandb/ (offline without a key)"),
    )
}
DEFAULT_LOGGERS = ("csv",)


def check_logger_names(key: str, names: Iterable[str]) -> None:
    """Refuse a name that is not a known logger, or one named twice."""
    names = list(names)
    for name in names:
        if name not in LOGGERS:
            raise ConfigError(
                f"{key}: unknown logger {name!r}; known loggers are {', '.join(LOGGERS)}"
            )
    if len(set(names)) < len(names):
        raise ConfigError(f"{key} names a logger twice: {names}")


def require_loggers(names: Iterable[str]) -> None:
    """Import what the named loggers need; a missing package is one line naming the extra.

    Called before a command writes anything, so a missing extra costs nothing.
    """
    names = list(names)
    check_logger_names("loggers", names)
    for name in names:
        for module in LOGGERS[name].modules:
            try:
                importlib.import_module(module)
            except ImportError:
                raise ConfigError(
                    f"the {name} logger needs the {module} package, which is not installed: {EXTRA}"
                ) from None


def wandb_reachable() -> bool:
    """True when a W&B API key is set (``WANDB_API_KEY`` or ``~/.netrc``) and the server
    answers within :data:`WANDB_PROBE_SECONDS`: then a run is logged online; otherwise
    offline, so that a run never waits on a login prompt or a network time-out."""
    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    host = url.hostname or "api.wandb.ai"
    if not os.environ.get("WANDB_API_KEY") and not _netrc_has(host):
        return False
    port = url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=WANDB_PROBE_SECONDS):
            return True
    except OSError:
        return False


def _netrc_has(host: str) -> bool:
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        return netrc.netrc(str(path)).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


class Loggers:
    """The loggers of one run as one: ``None`` values (no train loss at iteration 0) are
    left out, and every backend is closed even when another fails to."""

    def __init__(self, loggers: list[MetricLogger]) -> None:
        self.loggers = loggers

    def log(self, step: int, scalars: Mapping[str, float | None]) -> None:
        values = {k: float(v) for k, v in scalars.items() if v is not None}
        if values:
            for logger in self.loggers:
                logger.log(step, values)

    def close(self) -> None:
        errors = []
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as e:  # close the others first
                errors.append(e)
        self.loggers = []
        if errors:
            raise errors[0]


def open_loggers(names: Iterable[str], run: RunInfo) -> Loggers:
    """The named loggers, opened for ``run`` (see :func:`require_loggers` for checking
    them first); the ones opened already are closed when another fails to open."""
    opened: list[MetricLogger] = []
    try:
        for name in names:
            opened.append(LOGGERS[name].make(run))
    except BaseException:
        Loggers(opened).close()
        raise
    return Loggers(opened)

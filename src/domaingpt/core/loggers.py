"""Where a training run's scalars go besides its own files: TensorBoard, Weights & Biases.

``train.loggers`` (and ``adapt.loggers``) name backends of :data:`LOGGERS`:

``csv``          the files domaingpt always writes (``metrics.jsonl`` of a model,
                 ``curve.jsonl`` and ``curves.csv`` of an adaptation): the stages read
                 them, so they are written whichever loggers are named; nothing more;
``tensorboard``  event files in ``<dir>/tensorboard/`` (``torch.utils.tensorboard``):
                 scalars, the samples as text, ``loss.png`` as an image, and the run's
                 settings with its final metrics in the hparams plugin;
``wandb``        a Weights & Biases run, offline unless ``WANDB_MODE`` says otherwise or
                 an API key and the W&B server are both there. Every run of a study is
                 in one folder, ``<run>/wandb/`` (``wandb sync RUN/wandb`` uploads them
                 all), grouped by the study's name and named by its model; its config
                 holds the settings, the corpus SHA-256 and domaingpt's version; its id
                 is kept in the model directory (:data:`WANDB_ID_FILE`), so a resumed
                 model continues its W&B run. wandb's own defaults (system metrics, git,
                 console capture) are left as they are.

A backend is a class with ``log(step, scalars)``, ``text(step, tag, text)``,
``image(tag, path)``, ``summary(hparams, metrics)`` and ``close()``; :func:`open_loggers`
opens the named ones for one run and returns them as one such object. The optional
packages are imported only when a backend is named, and :func:`require_loggers` checks
them before anything is written (a missing one is a one-line error naming the extra).
"""

from __future__ import annotations

import importlib
import netrc
import os
import secrets
import socket
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from domaingpt.core.io import atomic_write_text, read_json
from domaingpt.core.version import __version__
from domaingpt.errors import ConfigError

#: The extra that installs every optional logger backend.
EXTRA = "pip install 'domaingpt[loggers]'"
#: How long the W&B server may take to answer before a run is logged offline.
WANDB_PROBE_SECONDS = 3.0
#: The file of a model (or adaptation) directory that holds its W&B run id.
WANDB_ID_FILE = "wandb-run-id"


class MetricLogger(Protocol):
    """One backend's view of one run: scalars at a step, then closed once."""

    def log(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def text(self, step: int, tag: str, text: str) -> None: ...

    def image(self, tag: str, path: Path) -> None: ...

    def summary(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunInfo:
    """What a backend knows of the run it logs.

    ``directory``: the model (or adaptation run) directory its files go under; ``name``:
    how the run is shown (``shakespeare``, ``shakespeare→math final@500 seed0``); ``group``:
    ``train`` or ``adapt``; ``resumed_from``: the iteration a resumed run continues after
    (None: from the start); the steps past it are logged again. ``root``: the run
    directory (W&B's one folder for the whole study; None: ``directory``); ``study``:
    the study's name (default: :func:`study_name` of ``root``); ``corpus_sha256``: the
    checksum of the corpus trained on.
    """

    directory: Path
    name: str
    group: str
    config: dict[str, Any] = field(default_factory=dict)
    resumed_from: int | None = None
    root: Path | None = None
    study: str = ""
    corpus_sha256: str = ""

    @property
    def study_name(self) -> str:
        return self.study or study_name(self.root or self.directory)


def study_name(root: Path) -> str:
    """A run's study name: ``study.json``'s ``name`` (``domaingpt run``), else the run
    directory's name (``domaingpt train --out DIR``)."""
    spec = root / "study.json"
    name = read_json(spec).get("name") if spec.is_file() else None
    return str(name or root.resolve().name)


def flat_hparams(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``: the scalar kinds the hparams
    plugin takes (lists and other values as text; None left out)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        elif value is not None:
            out[name] = str(value)
    return out


class CsvLogger:
    """``csv``: the JSONL/CSV files the trainer and the adapt stage write anyway."""

    def __init__(self, run: RunInfo) -> None:
        self.run = run

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        pass

    def text(self, step: int, tag: str, text: str) -> None:
        pass

    def image(self, tag: str, path: Path) -> None:
        pass

    def summary(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
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
        self.step = 0  # the last step logged

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        self.step = max(self.step, step)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=step)

    def text(self, step: int, tag: str, text: str) -> None:
        # TensorBoard renders Markdown: indented lines are shown verbatim (pre).
        self.writer.add_text(tag, "\n".join("    " + line for line in text.split("\n")), step)

    def image(self, tag: str, path: Path) -> None:
        """The PNG as it is, at the last step logged (``add_image`` would decode it and
        encode it again: a tenth of a second for a loss curve)."""
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

        with Image.open(path) as png:  # reads the header only
            width, height, channels = png.width, png.height, len(png.getbands())
        image = Summary.Image(
            height=height,
            width=width,
            colorspace=channels,
            encoded_image_string=Path(path).read_bytes(),
        )
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        self.writer.file_writer.add_summary(summary, self.step)

    def summary(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        """The hparams plugin's session, in this run's own event file (``add_hparams``
        would open a sub-run): the metrics are the scalars of those tags."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        for part in hparams_summary(dict(hparams), dict(metrics)):
            self.writer.file_writer.add_summary(part)

    def close(self) -> None:
        self.writer.close()


class WandbLogger:
    """``wandb``: a W&B run in ``<run>/wandb/`` (offline without a key or a server)."""

    def __init__(self, run: RunInfo) -> None:
        import wandb

        self.wandb = wandb
        self.texts: dict[str, list[tuple[int, str]]] = {}
        self.step = 0
        kwargs: dict[str, Any] = {}
        if not os.environ.get("WANDB_MODE"):
            kwargs["mode"] = "online" if wandb_reachable() else "offline"
        # No symbolic links (a run directory refuses them: see RunDir.refuse_links); the
        # rest is wandb's default (system metrics, git state, console capture).
        settings = wandb.Settings(silent=True, symlink=False)
        root = run.root or run.directory
        self.folder = root / "wandb"
        study = run.study_name
        config = {
            "study": study,
            "domaingpt_version": __version__,
            "corpus_sha256": run.corpus_sha256,
            **run.config,
        }
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "domaingpt"),
            name=run.name,
            group=study,
            job_type=run.group,
            tags=[study, run.group],
            id=wandb_run_id(run.directory, fresh=run.resumed_from is None),
            resume="allow",
            dir=str(root),
            config=config,
            settings=settings,
            **kwargs,
        )
        _drop_links(self.folder)

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        self.step = max(self.step, step)
        self.run.log(dict(scalars), step=step)

    def text(self, step: int, tag: str, text: str) -> None:
        # One table at the end: a media object per sample would cost a file and a call each.
        self.texts.setdefault(tag, []).append((step, text))

    def image(self, tag: str, path: Path) -> None:
        pass  # W&B charts the scalars itself; a wandb.Image would load its media modules

    def summary(self, hparams: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
        self.run.summary.update(dict(metrics))  # the settings are the run's config already

    def close(self) -> None:
        for tag, rows in self.texts.items():
            table = self.wandb.Table(columns=["step", "text"], data=rows)
            self.run.log({tag: table}, step=self.step)
        self.run.finish()
        _drop_links(self.folder)


def wandb_run_id(directory: Path, *, fresh: bool) -> str:
    """The W&B run id of a model (or adaptation) directory: the stored one when the run
    continues, else a new one, stored (a model trained afresh is a new W&B run)."""
    path = directory / WANDB_ID_FILE
    if not fresh and path.is_file():
        stored = path.read_text(encoding="utf-8").strip()
        if stored:
            return stored
    # As wandb's own ids: 8 characters of [a-z0-9].
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    atomic_write_text(path, run_id + "\n")
    return run_id


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

    @property
    def active(self) -> bool:
        """Whether any logger takes what the run's own files do not hold (not only csv):
        the per-step scalars are computed only then."""
        return any(not isinstance(logger, CsvLogger) for logger in self.loggers)

    def log(self, step: int, scalars: Mapping[str, float | None]) -> None:
        values = {k: float(v) for k, v in scalars.items() if v is not None}
        if values:
            for logger in self.loggers:
                logger.log(step, values)

    def text(self, step: int, tag: str, text: str) -> None:
        for logger in self.loggers:
            logger.text(step, tag, text)

    def image(self, tag: str, path: Path) -> None:
        if Path(path).is_file():
            for logger in self.loggers:
                logger.image(tag, Path(path))

    def summary(self, hparams: Mapping[str, Any], metrics: Mapping[str, float | None]) -> None:
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        for logger in self.loggers:
            logger.summary(hparams, values)

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

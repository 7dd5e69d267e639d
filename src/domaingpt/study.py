"""The whole study in one command: a study file, a graph of stages, and their cache.

``domaingpt run [study.toml]`` runs, in order::

    stats → train → evaluate → adapt → probe → saliency → quality → report

Each stage writes into its own part of the run directory and leaves a record in
``stages/<stage>.json``: its status, the *key* it ran with, the files it wrote and their
SHA-256. The key is a hash of the stage's settings, the checksums of its inputs (the
corpora, the files the stages before it wrote) and the tool version. A stage whose key
is unchanged and whose files are all still there is skipped, so the second run of a
command does no work, and a run stopped anywhere (Ctrl-C, kill) continues where it
stopped: the record is written only when a stage has finished, and training resumes
from its newest resumable checkpoint.

The analysis stages live in their own modules and are imported only when they run; a
module or function this version does not have makes its stage "not available" (the
report says so) instead of failing the run. A stage that fails leaves the stages before
it done, the stages that need it blocked, and the report marks the parts missing.

A *study file* is TOML::

    [study]
    name = "mine"                                   # run directory: runs/mine
    corpora = ["shakespeare", "math", "wikipedia", "data/notes.txt"]
    preset = "cpu-fast"                             # the training preset of every model
    [train]                                         # overrides of the training preset
    max_iters = 3000
    [evaluate]                                      # one table per analysis stage,
    [adapt]                                         # mapped onto its settings dataclass
    [probe]
    [saliency]

It is layered over a shipped study preset (``smoke``, ``cpu`` — the default — or
``gpu``, in ``domaingpt/studies/``): keys it sets win, everything else comes from the
preset. Setting ``[study] preset`` drops the preset study's ``[model]``/``[train]``/
``[data]`` overrides (they were meant for its own training preset). Paths in a study
file are relative to the file.

For notebooks, :class:`Study` reads a finished (or partly finished) run back without
re-running anything: ``Study.load("runs/cpu")["evaluate"]["zero_shot"]``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import json
import platform
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from . import __version__
from .config import (
    RunConfig,
    from_dict,
    load_preset,
    read_config_text,
    read_toml,
    settings_from_table,
)
from .corpus import Corpus, resolve_corpus
from .errors import ConfigError, DomainGPTError
from .io import atomic_write_text, read_json, read_jsonl, write_json
from .rundir import RunDir

__all__ = [
    "STAGES",
    "STUDY_PRESETS",
    "StageDef",
    "StageOutcome",
    "Study",
    "StudyResult",
    "StudySpec",
    "load_study",
    "run_study",
]

Log = Callable[[str], None]

STUDY_PRESETS = ("smoke", "cpu", "gpu")
DEFAULT_PRESET = "cpu"
STUDY_KEYS = ("name", "corpora", "preset", "data_dir", "description", "threads")
TRAIN_SECTIONS = ("model", "train", "data")
# Settings that change how fast a model trains, not what it learns (see train.RUNTIME_KEYS).
_RUNTIME_TRAIN_KEYS = {"compile", "device", "threads", "eval_interval", "eval_tokens"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --- the stage graph -----------------------------------------------------------------


@dataclass(frozen=True)
class StageDef:
    """One stage: where its code lives and which stages it reads.

    ``needs``: stages that must be done first (else this one is blocked); ``uses``:
    stages whose results it reads when they exist (their files are part of its key).
    Built-in stages (stats, train, report) have no ``module``.
    """

    name: str
    title: str
    subdir: str
    module: str | None = None
    runner: str | None = None
    loader: str | None = None
    settings: str | None = None
    needs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()


STAGES: tuple[StageDef, ...] = (
    StageDef("stats", "character statistics", "stats"),
    StageDef("train", "training (one model per corpus)", "models"),
    StageDef(
        "evaluate",
        "zero-shot loss matrix",
        "eval",
        "evaluate",
        "run_evaluate",
        "load_evaluate",
        "EvalSettings",
        needs=("train",),
    ),
    StageDef(
        "adapt",
        "few-shot adaptation",
        "adapt",
        "adapt",
        "run_adapt",
        "load_adapt",
        "AdaptSettings",
        needs=("train",),
    ),
    StageDef(
        "probe",
        "softmax inspection",
        "probe",
        "probe",
        "run_probe",
        "load_probe",
        "ProbeSettings",
        needs=("train",),
    ),
    StageDef(
        "saliency",
        "gradient-based interpretability",
        "saliency",
        "saliency",
        "run_saliency",
        "load_saliency",
        "SaliencySettings",
        needs=("train",),
        uses=("adapt",),
    ),
    StageDef(
        "quality",
        "sample quality metrics",
        "quality",
        "samplequality",
        "run_sample_quality",
        "load_sample_quality",
        "SampleQualitySettings",
        needs=("train",),
        uses=("adapt",),
    ),
    StageDef(
        "report",
        "report",
        "report",
        uses=("stats", "train", "evaluate", "adapt", "probe", "saliency", "quality"),
    ),
)
STAGE_NAMES = tuple(s.name for s in STAGES)
ANALYSIS_STAGES = tuple(s.name for s in STAGES if s.module)
_BY_NAME = {s.name: s for s in STAGES}


def stage_def(name: str) -> StageDef:
    """The stage called ``name``; an unknown name suggests the closest one."""
    if name not in _BY_NAME:
        close = difflib.get_close_matches(name, STAGE_NAMES, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown stage {name!r}: {hint}stages are {', '.join(STAGE_NAMES)}")
    return _BY_NAME[name]


class StageUnavailable(Exception):
    """The stage's module or function is not part of this version of domaingpt."""


def stage_api(stage: StageDef, what: str) -> Any:
    """The stage's runner, loader or settings class (``what``), imported on demand.

    Raises :class:`StageUnavailable` when this version lacks the module or the name; an
    ImportError *inside* an existing module is a bug and propagates.
    """
    if stage.module is None:
        raise StageUnavailable(f"{stage.name} is built in")
    modname = f"domaingpt.{stage.module}"
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        if e.name == modname:
            raise StageUnavailable(f"module {modname} is not in this version") from None
        raise
    attr = getattr(stage, what)
    if not hasattr(module, attr):
        raise StageUnavailable(f"{modname}.{attr} is not in this version")
    return getattr(module, attr)


def stage_available(stage: StageDef) -> bool:
    """True when this version has the stage's module, runner, loader and settings."""
    return _unavailable_reason(stage) is None


# --- the study file ------------------------------------------------------------------


def preset_study_text(preset: str) -> str:
    """The shipped study file of a preset (``smoke``, ``cpu``, ``gpu``)."""
    if preset not in STUDY_PRESETS:
        close = difflib.get_close_matches(preset, STUDY_PRESETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"unknown study preset {preset!r}: {hint}presets are {', '.join(STUDY_PRESETS)}"
        )
    return (resources.files("domaingpt") / "studies" / f"{preset}.toml").read_text("utf-8")


def _unknown(key: str, known: Iterable[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown key {key!r} in {where}{hint}")


def _check_sections(data: dict[str, Any], source: str) -> None:
    known = ("study", *TRAIN_SECTIONS, *ANALYSIS_STAGES)
    for section, values in data.items():
        if section not in known:
            close = difflib.get_close_matches(section, known, n=1, cutoff=0.5)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            raise ConfigError(
                f"unknown section [{section}] in {source}{hint} (known: {', '.join(known)})"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] in {source} must be a table")
    for key in data.get("study", {}):
        if key not in STUDY_KEYS:
            raise _unknown(f"study.{key}", [f"study.{k}" for k in STUDY_KEYS], source)


def _looks_like_path(name: str) -> bool:
    return "/" in name or "\\" in name or name.endswith(".txt")


def _resolve_input(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


# Keys of analysis tables that name files to read (relative to the study file) or to
# write (relative to, and never outside, the run directory).
_INPUT_SUFFIXES = ("file", "files", "path", "paths", "_dir")
_OUTPUT_PREFIXES = ("out", "output")


def _resolve_paths(section: str, values: dict[str, Any], base: Path, source: str) -> dict:
    out = {}
    for key, value in values.items():
        lowered = key.lower()
        if lowered.startswith(_OUTPUT_PREFIXES) and isinstance(value, str):
            p = Path(value)
            if p.is_absolute() or ".." in p.parts:
                raise ConfigError(
                    f"{section}.{key} = {value!r} in {source}: output paths are relative to "
                    "the run directory and cannot leave it"
                )
        elif lowered.endswith(_INPUT_SUFFIXES) and not lowered.startswith(_OUTPUT_PREFIXES):
            if isinstance(value, str) and value:
                value = _resolve_input(value, base)
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = [_resolve_input(v, base) for v in value]
        out[key] = value
    return out


@dataclass(frozen=True)
class StudySpec:
    """A study, resolved: corpora, training config and the analysis tables."""

    name: str
    corpora: tuple[str, ...]  # built-in names or absolute paths
    preset: str  # training preset: a shipped name or an absolute .toml path
    overrides: dict[str, dict[str, Any]]  # [model] / [train] / [data]
    analyses: dict[str, dict[str, Any]]  # stage -> its table, paths resolved
    base: str  # the study preset this builds on
    source: Path | None = None  # the study file, if any
    text: str | None = None  # its text, copied into the run
    data_dir: str | None = None
    description: str = ""
    threads: int = 0  # torch threads for every stage; 0: torch's default

    def config(self) -> RunConfig:
        """The training configuration shared by every model of the study."""
        cfg = from_dict(self.overrides, load_preset(self.preset), source=self.where)
        return dataclasses.replace(cfg, preset=Path(self.preset).stem).validate()

    @property
    def where(self) -> str:
        return str(self.source) if self.source else f"the {self.base} study preset"

    def settings(
        self,
        stage: str,
        *,
        corpora: list[Corpus] | None = None,
        data_dir: str | Path | None = None,
        offline: bool = False,
    ) -> Any:
        """The settings dataclass of an analysis stage, built from its table.

        Fields the table does not set are filled from the study where the dataclass has
        them: ``corpora`` (so every stage sees the study's corpora), ``data_dir`` and
        ``offline``. A ``validate()`` method, if the class has one, is called now.
        """
        sdef = stage_def(stage)
        cls = stage_api(sdef, "settings")
        table = dict(self.analyses.get(stage, {}))
        names = {f.name for f in dataclasses.fields(cls)}
        if "corpora" in names and "corpora" not in table and corpora is not None:
            table["corpora"] = [c.name if c.builtin else str(c.path) for c in corpora]
        data_dir = data_dir or self.data_dir
        if "data_dir" in names and "data_dir" not in table and data_dir:
            table["data_dir"] = str(data_dir)
        if "offline" in names and "offline" not in table and offline:
            table["offline"] = True
        settings = settings_from_table(cls, table, stage, source=self.where)
        if hasattr(settings, "validate"):
            try:
                settings = settings.validate() or settings
            except DomainGPTError as e:
                raise ConfigError(f"[{stage}] in {self.where}: {e}") from None
        return settings

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base": self.base,
            "description": self.description,
            "source": str(self.source) if self.source else None,
            "corpora": list(self.corpora),
            "preset": self.preset,
            "data_dir": self.data_dir,
            "threads": self.threads,
            "overrides": self.overrides,
            "analyses": self.analyses,
        }


def _merge(base: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) for k, v in base.items()}
    if "preset" in user.get("study", {}):
        for section in TRAIN_SECTIONS:
            merged.pop(section, None)
    for section, values in user.items():
        merged.setdefault(section, {}).update(values)
    return merged


def load_study(
    path: str | Path | None = None, *, preset: str | None = None, check: bool = True
) -> StudySpec:
    """Read a study file (layered over the study preset ``preset``, default ``cpu``).

    With ``check`` every table is validated now (unknown keys, wrong types, the training
    config), so a typo fails before hours of training, not after.
    """
    base_name = preset or DEFAULT_PRESET
    base = read_toml(preset_study_text(base_name), f"study preset {base_name!r}")
    user: dict[str, Any] = {}
    text = None
    source = None
    base_dir = Path.cwd()
    if path is not None:
        source = Path(path).expanduser()
        if not source.is_file():
            raise ConfigError(f"study file {source} does not exist: check the path")
        text = read_config_text(source, "study file")
        user = read_toml(text, f"study file {source}")
        _check_sections(user, f"study file {source}")
        source = source.resolve()
        base_dir = source.parent
    merged = _merge(base, user)
    where = str(source) if source else f"study preset {base_name!r}"
    study = merged.get("study", {})

    corpora = study.get("corpora")
    if not isinstance(corpora, list) or not corpora or not all(isinstance(c, str) for c in corpora):
        raise ConfigError(f"study.corpora in {where} must be a non-empty list of names or paths")
    user_corpora = user.get("study", {}).get("corpora") is not None
    resolved = tuple(
        _resolve_input(c, base_dir) if _looks_like_path(c) and user_corpora else c for c in corpora
    )
    train_preset = study.get("preset", "cpu-mini")
    if not isinstance(train_preset, str):
        raise ConfigError(f"study.preset in {where} must be a preset name or a .toml path")
    if "preset" in user.get("study", {}) and (
        train_preset.endswith(".toml") or _looks_like_path(train_preset)
    ):
        train_preset = _resolve_input(train_preset, base_dir)
    # A study file without a name is named after the file, not after its preset.
    name = user.get("study", {}).get("name") or (source.stem if source else study.get("name"))
    name = name or base_name
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"study.name {name!r} in {where} must be a simple name (letters, digits, . _ -): "
            "it names the run directory runs/NAME"
        )
    data_dir = study.get("data_dir")
    if data_dir is not None:
        if not isinstance(data_dir, str):
            raise ConfigError(f"study.data_dir in {where} must be a path")
        if "data_dir" in user.get("study", {}):
            data_dir = _resolve_input(data_dir, base_dir)
    threads = study.get("threads", 0)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise ConfigError(f"study.threads in {where} must be 0 (torch's default) or more")
    spec = StudySpec(
        name=name,
        corpora=resolved,
        preset=train_preset,
        overrides={s: dict(merged[s]) for s in TRAIN_SECTIONS if s in merged},
        analyses={
            s: _resolve_paths(s, merged[s], base_dir, where) for s in ANALYSIS_STAGES if s in merged
        },
        base=base_name,
        source=source,
        text=text,
        data_dir=data_dir,
        description=str(
            user.get("study", {}).get("description", "") if source else study.get("description", "")
        ),
        threads=threads,
    )
    if check:
        spec.config()
        for stage in ANALYSIS_STAGES:
            try:
                available = stage_available(_BY_NAME[stage])
            except Exception:  # a module that cannot be imported fails its stage when run
                continue
            if available:
                spec.settings(stage)
    return spec


# --- records, keys and fingerprints --------------------------------------------------


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _files_of(paths: Iterable[Path]) -> list[Path]:
    files: set[Path] = set()
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.update(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            files.add(p)
    return sorted(files)


def fingerprint_outputs(root: Path, paths: Iterable[Path]) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of the files a stage wrote (dirs walked)."""
    out = {}
    root = root.resolve()
    for f in _files_of(paths):
        try:
            rel = f.resolve().relative_to(root).as_posix()
        except ValueError:
            rel = str(f.resolve())
        out[rel] = [f.stat().st_size, _sha256(f)]
    return out


def _outputs_intact(root: Path, outputs: dict[str, list]) -> bool:
    for rel, (size, _sha) in outputs.items():
        p = root / rel
        if not p.is_file() or p.stat().st_size != size:
            return False
    return True


def record_path(run: RunDir, stage: str) -> Path:
    return run.root / "stages" / f"{stage}.json"


def read_record(run: RunDir, stage: str) -> dict[str, Any] | None:
    path = record_path(run, stage)
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def versions() -> dict[str, str]:
    """Versions of the tool and its main dependencies: a run says how it was made."""
    import numpy
    import torch

    return {
        "domaingpt": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
        "platform": platform.platform(),
    }


# --- running -------------------------------------------------------------------------


@dataclass
class StageOutcome:
    stage: str
    status: str  # done | skipped | failed | blocked | unavailable
    seconds: float = 0.0
    message: str = ""
    user_error: bool = True  # False: an unexpected exception (a bug), see stages/<stage>.log


@dataclass
class StudyResult:
    run: RunDir
    outcomes: list[StageOutcome] = field(default_factory=list)

    @property
    def failed(self) -> list[StageOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def status(self, stage: str) -> str:
        return next(o.status for o in self.outcomes if o.stage == stage)

    @property
    def exit_code(self) -> int:
        if not self.failed:
            return 0
        return 2 if all(o.user_error for o in self.failed) else 1


@dataclass
class _Context:
    run: RunDir
    spec: StudySpec
    corpora: list[Corpus]
    progress: bool
    log: Log
    force: set[str]
    data_dir: str | Path | None = None
    download: bool = True
    threads: int = 0


def _stage_inputs(sdef: StageDef, ctx: _Context, records: dict[str, dict]) -> dict[str, Any]:
    inputs: dict[str, Any] = {"corpora": [[c.name, c.sha256] for c in ctx.corpora]}
    for dep in (*sdef.needs, *sdef.uses):
        rec = records.get(dep)
        done = rec is not None and rec.get("status") == "done"
        inputs[dep] = _digest(rec["outputs"]) if done else (rec or {}).get("status", "absent")
    return inputs


def _stage_settings(sdef: StageDef, ctx: _Context) -> Any:
    if sdef.name == "train":
        cfg = ctx.spec.config().to_dict()
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in _RUNTIME_TRAIN_KEYS}
        return cfg
    if sdef.module:
        return ctx.spec.settings(
            sdef.name, corpora=ctx.corpora, data_dir=ctx.data_dir, offline=not ctx.download
        )
    return None


# Settings that say where or how fast a stage runs, not what it computes: not in the key.
_RUNTIME_SETTINGS = {"device", "threads", "data_dir", "offline"}


def _settings_dict(settings: Any) -> Any:
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        d = dataclasses.asdict(settings)
        return {k: v for k, v in d.items() if k not in _RUNTIME_SETTINGS}
    return settings


def _run_stats(ctx: _Context, settings: Any) -> dict[str, Path]:
    from tqdm.auto import tqdm

    from .stats import compute_stats, write_stats

    stats = []
    for corpus in tqdm(ctx.corpora, desc="stats", disable=not ctx.progress, leave=False):
        stats.append(
            compute_stats(corpus.name, corpus.read_text(), n_bytes=corpus.path.stat().st_size)
        )
    return write_stats(stats, ctx.run.stats)


def _study_vocab(ctx: _Context):
    """The run's vocabulary (``vocab.json``), made from the study's corpora.

    When the study's corpora changed since it was made, it is kept if it still holds
    every character of them (a corpus added with no new characters trains only its own
    model), and rebuilt otherwise (then every model is retrained with the new one).
    """
    from .rundir import study_vocab
    from .vocab import Vocab

    want = {c.name: c.sha256 for c in ctx.corpora}
    path = ctx.run.vocab_path
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            vocab = Vocab.from_json(data)
            have = data.get("corpora")
        except (OSError, ValueError, AttributeError, DomainGPTError):
            data, vocab, have = None, None, None
        if have != want:
            changed = [c for c in ctx.corpora if (have or {}).get(c.name) != c.sha256]
            needed = Vocab.from_texts(c.read_text() for c in changed)
            if vocab is not None and set(needed.chars) <= set(vocab.chars):
                ctx.log(
                    f"{path} already holds every character of "
                    f"{', '.join(c.name for c in changed) or 'the corpora'}: kept"
                )
                write_json(path, {**vocab.to_json(), "corpora": want})
                return vocab
            ctx.log(
                f"the study's corpora have characters {path} lacks: rebuilding the "
                "vocabulary (models trained with the old one are retrained)"
            )
            path.unlink()
    return study_vocab(ctx.run, ctx.corpora)


def model_outputs(model_dir: Path) -> list[Path]:
    """The files that define a trained model for the stages after training."""
    from .checkpoint import list_checkpoints

    files = [model_dir / n for n in ("run.json", "metrics.jsonl", "samples.jsonl", "loss.png")]
    files += [c.json_path for c in list_checkpoints(model_dir / "checkpoints", "iter")]
    return [f for f in files if f.is_file()]


def _model_state(model_dir: Path, record: dict, max_iters: int) -> str:
    """``absent``, ``different`` (another config), ``partial`` or ``finished``."""
    from .train import _config_differences, final_checkpoint

    run_json = model_dir / "run.json"
    if not run_json.exists():
        return "absent" if not model_dir.exists() or not any(model_dir.iterdir()) else "different"
    try:
        old = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "different"
    if _config_differences(old, record):
        return "different"
    last = final_checkpoint(model_dir)
    metrics = model_dir / "metrics.jsonl"
    if last is None or last.iteration != max_iters or not metrics.exists():
        return "partial"
    rows = read_jsonl(metrics)
    if not rows or "val_loss_full" not in rows[-1] or not (model_dir / "loss.png").exists():
        return "partial"
    return "finished"


def _run_train(ctx: _Context, settings: Any) -> dict[str, Path]:
    from .data import encode_corpus
    from .train import _run_record, train

    cfg = ctx.spec.config()
    vocab = _study_vocab(ctx)
    out: dict[str, Path] = {"vocab": ctx.run.vocab_path}
    for i, corpus in enumerate(ctx.corpora, start=1):
        model_dir = ctx.run.model(corpus.name)
        record = _run_record(cfg, corpus.name, corpus.sha256, vocab)
        state = _model_state(model_dir, record, cfg.train.max_iters)
        prefix = f"model {i}/{len(ctx.corpora)} ({corpus.name})"
        if state == "finished" and "train" not in ctx.force:
            ctx.log(f"{prefix}: finished earlier with this configuration, skipped")
        else:
            encoded = encode_corpus(corpus, vocab)
            if encoded.n_unk:
                ctx.log(f"warning: {encoded.n_unk} characters of {corpus.name} are <unk>")
            train_ids, val_ids = encoded.checked_split(cfg.data.val_fraction, cfg.model.block_size)
            overwrite = state == "different" or "train" in ctx.force
            what = {
                "absent": "training",
                "partial": "continuing",
                "different": "configuration changed: retraining",
                "finished": "retraining (--force)",
            }[state]
            ctx.log(f"{prefix}: {what}, {cfg.train.max_iters} iterations")
            train(
                corpus.name,
                corpus.sha256,
                train_ids,
                val_ids,
                vocab,
                cfg,
                model_dir,
                resume=True,
                overwrite=overwrite,
                progress=ctx.progress,
                log=ctx.log,
            )
        for f in model_outputs(model_dir):
            out[f"{corpus.name}/{f.relative_to(model_dir).as_posix()}"] = f
    return out


def _run_report(ctx: _Context, settings: Any) -> dict[str, Path]:
    from .report import write_report

    return write_report(Study.load(ctx.run.root), progress=ctx.progress, log=ctx.log)


def _run_analysis(sdef: StageDef, ctx: _Context, settings: Any) -> dict[str, Path]:
    runner = stage_api(sdef, "runner")
    written = runner(ctx.run, settings, progress=ctx.progress, log=ctx.log)
    if not isinstance(written, dict) or not written:
        written = {"dir": ctx.run.root / sdef.subdir}
    return {str(k): Path(v) for k, v in written.items()}


_BUILTIN: dict[str, Callable[[_Context, Any], dict[str, Path]]] = {
    "stats": _run_stats,
    "train": _run_train,
    "report": _run_report,
}


def _write_record(run: RunDir, stage: str, record: dict[str, Any]) -> None:
    write_json(record_path(run, stage), record)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _make_log(run: RunDir, quiet_sink: Log | None) -> Log:
    from tqdm.auto import tqdm

    log_file = run.root / "log.txt"

    def log(msg: str) -> None:
        line = f"{datetime.now().strftime('%H:%M:%S')} {msg}"
        if quiet_sink is not None:
            quiet_sink(msg)
        else:
            tqdm.write(msg, file=sys.stderr)
        with log_file.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    return log


def _copy_study(run: RunDir, spec: StudySpec) -> None:
    """The study file, its resolved form and the versions, written into the run.

    Rewritten only when they changed, so a run that does no work changes no file.
    """
    text = spec.text if spec.text is not None else preset_study_text(spec.base)
    path = run.root / "study.toml"
    old = path.read_text(encoding="utf-8").split("\n", 1)[-1] if path.is_file() else None
    if old != text:
        header = (
            f"# Copied by domaingpt {__version__} at {_now()}; layered over the "
            f"{spec.base!r} study preset. Resolved: study.json, versions: versions.json.\n"
        )
        atomic_write_text(path, header + text)
    for name, obj in (("study.json", spec.to_dict()), ("versions.json", versions())):
        target = run.root / name
        try:
            same = target.is_file() and json.loads(target.read_text(encoding="utf-8")) == obj
        except (OSError, ValueError):
            same = False
        if not same:
            write_json(target, obj)


def run_study(
    spec: StudySpec,
    out: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    force: Iterable[str] = (),
    progress: bool = True,
    log: Log | None = None,
    download: bool = True,
    threads: int | None = None,
) -> StudyResult:
    """Run every stage of ``spec`` into ``out`` (default ``runs/<name>``); see module doc.

    ``threads`` (default: the study's ``threads``) sets torch's thread count for every
    stage; on a CPU shared with other jobs, 1 can be many times faster for small models.
    ``log`` receives the log lines (default: stderr above the progress bars). A stage
    failure does not raise: it is in the result (``result.failed``) and its record.
    KeyboardInterrupt propagates; running again continues.
    """
    run = RunDir(Path(out) if out is not None else Path("runs") / spec.name)
    run.check_writable()
    force = set(force)
    if "all" in force:
        force = set(STAGE_NAMES)
    for name in force:
        stage_def(name)
    run.root.mkdir(parents=True, exist_ok=True)
    log_fn = _make_log(run, log)
    corpora = [
        resolve_corpus(c, data_dir or spec.data_dir, download=download) for c in spec.corpora
    ]
    names = [c.name for c in corpora]
    if len(set(names)) != len(names):
        raise ConfigError(f"study.corpora names the same corpus twice: {names}")
    _copy_study(run, spec)
    ctx = _Context(
        run,
        spec,
        corpora,
        progress,
        log_fn,
        force,
        data_dir or spec.data_dir,
        download,
        spec.threads if threads is None else threads,
    )
    result = StudyResult(run)
    records = {s.name: read_record(run, s.name) or {} for s in STAGES}
    n = len(STAGES)
    log_fn(f"study {spec.name!r}: {len(corpora)} corpora ({', '.join(names)}) → {run.root}")
    for i, sdef in enumerate(STAGES, start=1):
        head = f"stage {i}/{n}: {sdef.name}"
        outcome = _run_one(sdef, ctx, records, head)
        result.outcomes.append(outcome)
        records[sdef.name] = read_record(run, sdef.name) or {}
    done = sum(o.status in ("done", "skipped") for o in result.outcomes)
    log_fn(f"study {spec.name!r}: {done}/{n} stages complete; report: {run.root / 'report.html'}")
    return result


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """torch uses ``n`` threads inside the block (0: unchanged); the count is restored."""
    if n <= 0:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _unavailable_reason(sdef: StageDef) -> str | None:
    """Why this version cannot run ``sdef`` (None: it can). Import errors propagate."""
    if sdef.module is None:
        return None
    try:
        for what in ("runner", "loader", "settings"):
            stage_api(sdef, what)
    except StageUnavailable as e:
        return str(e)
    return None


def _failed(
    sdef: StageDef, ctx: _Context, head: str, error: BaseException, seconds: float
) -> StageOutcome:
    """Record and log a failed stage; the message names the stage and the cause."""
    run = ctx.run
    user_error = isinstance(error, DomainGPTError)
    message = str(error) if user_error else f"{type(error).__name__}: {error}"
    record: dict[str, Any] = {
        "stage": sdef.name,
        "status": "failed",
        "message": message,
        "at": _now(),
        "seconds": round(seconds, 3),
    }
    if not user_error:
        tb = run.root / "stages" / f"{sdef.name}.log"
        atomic_write_text(
            tb, "".join(traceback.format_exception(type(error), error, error.__traceback__))
        )
        record["traceback"] = str(tb)
        message += f" (traceback in {tb})"
    _write_record(run, sdef.name, record)
    ctx.log(f"{head} — FAILED: {message}")
    return StageOutcome(sdef.name, "failed", seconds, message, user_error)


def _not_run(sdef: StageDef, ctx: _Context, status: str, reason: str, line: str) -> StageOutcome:
    """Log ``line``, record why the stage did not run (``status``: unavailable or blocked)."""
    ctx.log(line)
    _write_record(
        ctx.run,
        sdef.name,
        {"stage": sdef.name, "status": status, "message": reason, "at": _now()},
    )
    return StageOutcome(sdef.name, status, message=reason)


def _run_one(sdef: StageDef, ctx: _Context, records: dict[str, dict], head: str) -> StageOutcome:
    run, log = ctx.run, ctx.log
    try:
        reason = _unavailable_reason(sdef)
    except Exception as e:  # the module exists but does not import: a failure, not a crash
        return _failed(sdef, ctx, head, e, 0.0)
    if reason is not None:
        line = f"{head} — not available in this version ({reason})"
        return _not_run(sdef, ctx, "unavailable", reason, line)
    missing = [d for d in sdef.needs if records.get(d, {}).get("status") != "done"]
    if missing:
        reason = f"needs {', '.join(missing)}, which did not complete"
        return _not_run(sdef, ctx, "blocked", reason, f"{head} — blocked: {reason}")

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        settings = _stage_settings(sdef, ctx)
        inputs = _stage_inputs(sdef, ctx, records)
        settings_d = _settings_dict(settings)
        key = _digest(
            {"stage": sdef.name, "settings": settings_d, "inputs": inputs, "v": __version__}
        )
        old = records.get(sdef.name) or {}
        if (
            sdef.name not in ctx.force
            and old.get("status") == "done"
            and old.get("key") == key
            and _outputs_intact(run.root, old.get("outputs", {}))
        ):
            log(f"{head} — unchanged, skipped")
            return StageOutcome(sdef.name, "skipped")
        if old.get("status") == "done" and sdef.name not in ctx.force:
            why = "its inputs or settings changed" if old.get("key") != key else "files missing"
            log(f"{head} — {sdef.title}: running again ({why})")
        else:
            log(f"{head} — {sdef.title}")
        # Until this stage finishes, no record says it is done.
        record_path(run, sdef.name).unlink(missing_ok=True)
        with _torch_threads(ctx.threads):
            if sdef.module:
                written = _run_analysis(sdef, ctx, settings)
            else:
                written = _BUILTIN[sdef.name](ctx, settings)
        outputs = fingerprint_outputs(run.root, written.values())
    except KeyboardInterrupt:
        log(f"{head} — interrupted; run the same command again to continue")
        raise
    except Exception as e:
        return _failed(sdef, ctx, head, e, time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    _write_record(
        run,
        sdef.name,
        {
            "stage": sdef.name,
            "status": "done",
            "key": key,
            "settings": settings_d,
            "inputs": inputs,
            "outputs": outputs,
            "version": __version__,
            "at": _now(),
            "seconds": round(seconds, 3),
            "cpu_seconds": round(time.process_time() - c0, 3),
        },
    )
    log(f"{head} — done in {_fmt_seconds(seconds)}")
    return StageOutcome(sdef.name, "done", seconds)


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 90 else f"{int(s // 60)} min {int(s % 60):02d} s"


# --- reading a run back --------------------------------------------------------------


def load_training(run: RunDir) -> dict[str, pd.DataFrame]:
    """The training results of every model of a run as tidy tables.

    ``metrics``: model, iter, train_loss, val_loss, lr, tokens_per_s, elapsed,
    val_loss_full (last row of each model). ``samples``: model, iter, val_loss, prompt,
    seed, temperature, text. ``summary``: one row per model (iterations, final val loss
    on the whole split, train time).
    """
    metrics, samples, summary = [], [], []
    for name in run.trained_models():
        d = run.model(name)
        rows = read_jsonl(d / "metrics.jsonl") if (d / "metrics.jsonl").exists() else []
        metrics += [{"model": name, **r} for r in rows]
        if (d / "samples.jsonl").exists():
            samples += [{"model": name, **r} for r in read_jsonl(d / "samples.jsonl")]
        if rows:
            last = rows[-1]
            first = rows[0]
            summary.append(
                {
                    "model": name,
                    "iterations": last["iter"],
                    "initial_val_loss": first.get("val_loss"),
                    "final_val_loss": last.get("val_loss_full", last.get("val_loss")),
                    "train_seconds": last.get("elapsed"),
                    "finished": "val_loss_full" in last,
                }
            )
    return {
        "metrics": pd.DataFrame(metrics),
        "samples": pd.DataFrame(samples),
        "summary": pd.DataFrame(summary),
    }


def _load_conclusions(run: RunDir) -> dict[str, pd.DataFrame]:
    path = run.root / "report" / "conclusions.csv"
    if not path.is_file():
        raise DomainGPTError(f"{path} not found: the report stage has not run")
    return {"conclusions": pd.read_csv(path, keep_default_na=False)}


class Study:
    """A run directory read back for a notebook; nothing is re-run.

    ``study["evaluate"]`` is the dict of DataFrames that stage wrote (via its
    ``load_*``); ``study.figures["stats"]`` the PNG files of a stage; ``study.records``
    the stage records (status, seconds, key); ``study.spec`` the resolved study file.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.run = RunDir(self.root)
        self._tables: dict[str, dict[str, pd.DataFrame]] = {}

    @classmethod
    def load(cls, root: str | Path) -> Study:
        root = Path(root)
        if not root.is_dir():
            raise DomainGPTError(f"run directory {root} does not exist: run `domaingpt run` first")
        return cls(root)

    @classmethod
    def run_file(
        cls,
        study_file: str | Path | None = None,
        *,
        preset: str | None = None,
        out: str | Path | None = None,
        **kwargs: Any,
    ) -> Study:
        """Run (or continue) a study and return it loaded; see :func:`run_study`."""
        result = run_study(load_study(study_file, preset=preset), out, **kwargs)
        return cls(result.run.root)

    # -- metadata ----------------------------------------------------------------------
    @property
    def spec(self) -> dict[str, Any]:
        p = self.root / "study.json"
        return read_json(p) if p.is_file() else {}

    @property
    def versions(self) -> dict[str, str]:
        p = self.root / "versions.json"
        return read_json(p) if p.is_file() else {}

    @property
    def records(self) -> dict[str, dict[str, Any]]:
        return {s.name: rec for s in STAGES if (rec := read_record(self.run, s.name))}

    def status(self, stage: str) -> str:
        """done, failed, blocked, unavailable, or absent (never run)."""
        stage_def(stage)
        return (read_record(self.run, stage) or {}).get("status", "absent")

    def corpora(self) -> list[str]:
        names = [Path(c).stem if _looks_like_path(c) else c for c in self.spec.get("corpora", [])]
        return names or self.run.trained_models()

    # -- results -----------------------------------------------------------------------
    def tables(self, stage: str) -> dict[str, pd.DataFrame]:
        """Every table of a stage as DataFrames (read once, then cached)."""
        sdef = stage_def(stage)
        if stage not in self._tables:
            if stage == "stats":
                from .stats import load_stats

                self._tables[stage] = load_stats(self.run.stats)
            elif stage == "train":
                self._tables[stage] = load_training(self.run)
            elif stage == "report":
                self._tables[stage] = _load_conclusions(self.run)
            else:
                try:
                    loader = stage_api(sdef, "loader")
                except StageUnavailable as e:
                    raise DomainGPTError(f"{stage}: not available in this version ({e})") from None
                if self.status(stage) != "done":
                    raise DomainGPTError(
                        f"{stage} has not completed in {self.root} (status: {self.status(stage)})"
                    )
                self._tables[stage] = loader(self.run)
        return self._tables[stage]

    def __getitem__(self, stage: str) -> dict[str, pd.DataFrame]:
        return self.tables(stage)

    @property
    def figures(self) -> dict[str, list[Path]]:
        """PNG figures by stage (sorted by path)."""
        out: dict[str, list[Path]] = {}
        for s in STAGES:
            d = self.root / s.subdir
            if d.is_dir():
                found = sorted(d.rglob("*.png"))
                if found:
                    out[s.name] = found
        return out

    @property
    def conclusions(self) -> pd.DataFrame:
        return self.tables("report")["conclusions"]

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    def __repr__(self) -> str:
        status = ", ".join(f"{s}={r.get('status')}" for s, r in self.records.items())
        return f"Study({str(self.root)!r}: {status})"

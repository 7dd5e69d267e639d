"""A model directory: what its ``run.json`` records, whether a run may reuse, continue,
extend or replace it, and the one rule for deleting it.

``run.json`` records the corpus (name, SHA-256 and the absolute path of its file, so
every stage finds a user's own text again by itself), the vocabulary fingerprint, the
training configuration and the versions. A directory is continued (``--resume``) only
with the same configuration, except ``train.max_iters``, which may be raised to extend a
model (see :func:`check_model_dir`; each extension is listed in ``run.json`` under
``extensions``). Nothing is deleted unless it is a directory domaingpt wrote as a model
directory (:func:`is_model_dir`), ``--overwrite`` or not.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from domaingpt.core.config import (
    REMOVED_STEPS,
    RUNTIME_TRAIN_KEYS,
    TRAIN_SECTIONS,
    RunConfig,
    apply_overrides,
    from_dict,
)
from domaingpt.core.io import read_jsonl, record_dict, write_json
from domaingpt.core.loggers import WANDB_ID_FILE
from domaingpt.core.owned import remove_owned
from domaingpt.core.version import __version__
from domaingpt.data.corpus import check_model_name
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.model.checkpoint import CheckpointInfo, damaged_checkpoints, list_checkpoints

#: Training keys a model may be continued with a new value of: raising max_iters extends it.
EXTENDABLE_TRAIN_KEYS = frozenset({"max_iters"})
#: What domaingpt writes in a model directory (and ``checkpoints/`` holds only checkpoints).
MODEL_FILES = frozenset(
    {"run.json", "metrics.jsonl", "samples.jsonl", "loss.png", "loss.svg", "checkpoints"}
    | {"tensorboard", "wandb", WANDB_ID_FILE}  # train.loggers' files (core.loggers)
)
_CHECKPOINT_FILE = re.compile(r"^(iter|resume)-\d{7,}\.(json|safetensors)$")
_TEMP_FILE = re.compile(r"^\..+\.tmp$")  # an atomic write's temporary file (core.io)


class ModelState(StrEnum):
    """What a study does with a model directory (:func:`model_state`)."""

    ABSENT = "absent"  # no model there: train it
    DIFFERENT = "different"  # another configuration, or not a model: retrain
    DAMAGED = "damaged"  # its run.json is missing or unreadable: refused unless forced
    EXTEND = "extend"  # trained with a smaller max_iters: continue it
    PARTIAL = "partial"  # interrupted, or a history checkpoint damaged: continue it
    FINISHED = "finished"  # trained with this configuration: skip it


class Plan(StrEnum):
    """What training into a model directory does (:func:`check_model_dir`)."""

    FRESH = "fresh"  # a new model
    RESUME = "resume"  # continue or extend the model there
    REPLACE = "replace"  # delete the model there (--overwrite), then start afresh


@dataclass(frozen=True)
class ModelRecord:
    """What a model's ``run.json`` says: read (:meth:`from_dict`) and written
    (:meth:`to_dict`) only here. Every field may be missing from a file (an older
    version's, an imported model's); a value of the wrong type reads as missing; keys
    this version does not know are kept in ``extra`` and written back."""

    corpus: str | None = None
    corpus_sha256: str | None = None
    vocab_fingerprint: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # RunConfig.to_dict()
    domaingpt_version: str | None = None
    torch_version: str | None = None
    corpus_path: str | None = None  # the corpus file, absolute, where it was trained
    imported_from: Any = None  # a model trained elsewhere: where it came from
    extensions: list[Any] | None = None  # each time max_iters was raised to extend it
    extra: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        """One table of the training config (``model``, ``train``, ``data``; {} if none)."""
        table = self.config.get(name)
        return table if isinstance(table, dict) else {}

    def to_dict(self) -> dict[str, Any]:
        return record_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelRecord:
        known = {f.name for f in fields(cls)} - {"extra"}

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) else None

        config, extensions = data.get("config"), data.get("extensions")
        return cls(
            corpus=text("corpus"),
            corpus_sha256=text("corpus_sha256"),
            vocab_fingerprint=text("vocab_fingerprint"),
            config=config if isinstance(config, dict) else {},
            domaingpt_version=text("domaingpt_version"),
            torch_version=text("torch_version"),
            corpus_path=text("corpus_path"),
            imported_from=data.get("imported_from"),
            extensions=extensions if isinstance(extensions, list) else None,
            extra={k: v for k, v in data.items() if k not in known},
        )

    def over(self, old: ModelRecord) -> ModelRecord:
        """This record, with what only ``old`` says kept (a continued model's)."""
        return ModelRecord(
            **{
                f.name: getattr(self, f.name)
                if getattr(self, f.name) is not None
                else getattr(old, f.name)
                for f in fields(self)
                if f.name != "extra"
            },
            extra={**old.extra, **self.extra},
        )


def write_record(model_dir: Path, record: ModelRecord) -> Path:
    """Write a model's ``run.json``."""
    return write_json(model_dir / "run.json", record.to_dict())


def run_record(
    cfg: RunConfig,
    corpus_name: str,
    corpus_sha: str,
    vocab: AnyVocab,
    corpus_path: str | Path | None = None,
) -> ModelRecord:
    """What ``run.json`` records about a model (``corpus_path`` made absolute)."""
    return ModelRecord(
        corpus=corpus_name,
        corpus_sha256=corpus_sha,
        vocab_fingerprint=vocab.fingerprint,
        config=cfg.to_dict(),
        domaingpt_version=__version__,
        torch_version=torch.__version__,
        corpus_path=str(Path(corpus_path).resolve()) if corpus_path is not None else None,
    )


def config_differences(old: ModelRecord, new: ModelRecord) -> list[str]:
    """What makes ``new`` another model than ``old``: corpus, vocabulary, configuration
    (neither the keys that only change how fast it trains, nor an extendable one)."""
    diffs = []
    for key in ("corpus", "corpus_sha256", "vocab_fingerprint"):
        if getattr(old, key) != getattr(new, key):
            diffs.append(key)
    for section, values in new.config.items():
        if not isinstance(values, dict):
            continue
        before = old.section(section)
        for k, v in values.items():
            if k in RUNTIME_TRAIN_KEYS or (section == "train" and k in EXTENDABLE_TRAIN_KEYS):
                continue
            if before.get(k) != v:
                diffs.append(f"{section}.{k} ({before.get(k)!r} -> {v!r})")
    return diffs


def is_model_dir(directory: Path) -> bool:
    """A real directory holding nothing but what training writes there, and ``run.json``
    or a domaingpt checkpoint record (a model whose ``run.json`` was lost is still one):
    the only kind of folder domaingpt ever deletes (see :mod:`domaingpt.core.owned`)."""
    if directory.is_symlink() or not directory.is_dir():
        return False
    names = {p.name for p in directory.iterdir() if not _TEMP_FILE.match(p.name)}
    if names - MODEL_FILES:
        return False
    checkpoints = directory / "checkpoints"
    if not checkpoints.exists():
        return "run.json" in names
    if checkpoints.is_symlink() or not checkpoints.is_dir():
        return False
    files = list(checkpoints.iterdir())
    if not all(_CHECKPOINT_FILE.match(p.name) or _TEMP_FILE.match(p.name) for p in files):
        return False
    return "run.json" in names or any(
        list_checkpoints(checkpoints, kind) for kind in ("iter", "resume")
    )


def remove_model_dir(model_dir: Path, fix: str) -> None:
    """Delete a model directory, refusing (``fix``: what to do instead) any folder
    domaingpt did not write as one."""
    remove_owned(
        model_dir,
        is_model_dir,
        f"{model_dir} exists and is not a domaingpt model directory (--overwrite replaces "
        f"only model directories domaingpt wrote); {fix}",
    )


def damaged_record(model_dir: Path) -> str | None:
    """Why a model directory's ``run.json`` cannot be used (None: it can, or there is no
    model there): a model whose record was removed or damaged, so nothing can tell
    which study it belongs to."""
    run_json = model_dir / "run.json"
    if not is_model_dir(model_dir):
        return None
    if not run_json.exists():
        return f"{run_json} is missing"
    try:
        read_record(model_dir)
    except DomainGPTError:
        return f"{run_json} is unreadable"
    return None


def trained_to(model_dir: Path) -> int:
    """The last iteration a model has a checkpoint of (-1: none)."""
    found = [
        c.iteration
        for kind in ("resume", "iter")
        for c in list_checkpoints(model_dir / "checkpoints", kind)
    ]
    return max(found, default=-1)


def load_record(model_dir: Path) -> tuple[ModelRecord | None, str]:
    """A model's ``run.json``, and what is wrong with it: ``""`` (nothing), ``missing``,
    ``unreadable`` (not a JSON object), ``damaged`` (its config is not a table of
    tables: every reader indexes it) or ``no config`` (a record without one, still
    read). The one reader of the file."""
    run_json = model_dir / "run.json"
    if not run_json.exists():
        return None, "missing"
    try:
        data = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None, "unreadable"
    if not isinstance(data, dict):
        return None, "unreadable"
    config = data.get("config", {})
    if not isinstance(config, dict) or not all(
        isinstance(config.get(s, {}), dict) for s in ("model", "train", "data")
    ):
        return None, "damaged"
    return ModelRecord.from_dict(data), "" if "config" in data else "no config"


def read_record(model_dir: Path) -> ModelRecord | None:
    """A model's ``run.json``; None when there is none; an error when it is unreadable."""
    record, why = load_record(model_dir)
    if why not in ("", "missing"):
        raise DomainGPTError(
            f"{model_dir / 'run.json'} is unreadable, so {model_dir} cannot be continued; "
            f"restore its run.json or use another --out{_replace_hint(model_dir)}"
        )
    return record


def _replace_hint(model_dir: Path) -> str:
    """``--overwrite`` is suggested only where it would delete no trained work."""
    if trained_to(model_dir) < 0 and is_model_dir(model_dir):
        return "; it holds no checkpoint yet: --overwrite replaces it"
    return ""


def _different(model_dir: Path, diffs: list[str], resume: bool) -> DomainGPTError:
    config = any("." in d for d in diffs)
    if resume and config:
        fix = (
            "--resume continues a model with the configuration its run.json records: drop "
            "the --preset and --set options that change it (raising train.max_iters extends "
            "it), or use another --out for this configuration"
        )
    elif config:
        fix = (
            "use another --out for this configuration, or pass --resume alone to continue "
            "the model as it was configured"
        )
    else:
        fix = "use another --out for this one"
    return DomainGPTError(
        f"{model_dir} already holds a different run (differs in: {', '.join(diffs)}); "
        f"{fix}{_replace_hint(model_dir)}"
    )


def check_model_dir(model_dir: Path, record: ModelRecord, *, resume: bool, overwrite: bool) -> Plan:
    """What training into ``model_dir`` would do, checked before anything is written:
    ``fresh`` (a new model), ``resume`` (continue or extend the model there) or
    ``replace`` (``overwrite``: delete the model there, then start afresh).

    Refused, each with a one-line error: a folder that is not a model directory (even
    with ``overwrite``), a model with another configuration or a shorter ``max_iters``
    than it has already trained, and an existing model without ``resume``.
    """
    check_model_name(model_dir.name, f"model directory {model_dir}")
    if model_dir.is_symlink():
        raise DomainGPTError(
            f"{model_dir} is a symbolic link; domaingpt never writes through one: use another --out"
        )
    if not model_dir.exists() or (model_dir.is_dir() and not any(model_dir.iterdir())):
        return Plan.FRESH
    record_there = (model_dir / "run.json").is_file()
    if overwrite and is_model_dir(model_dir):
        return Plan.REPLACE
    if not record_there or overwrite:
        damaged = damaged_record(model_dir)
        if damaged:
            raise DomainGPTError(
                f"{damaged}, so the model in {model_dir} cannot be checked or continued; "
                "restore it, or retrain the model with --overwrite (in a study: run again "
                "with --force train)"
            )
        raise DomainGPTError(
            f"{model_dir} exists and is not a domaingpt model directory; use another --out"
            + (" (--overwrite deletes only model directories domaingpt wrote)" if overwrite else "")
        )
    old = read_record(model_dir) or ModelRecord()
    diffs = config_differences(old, record)
    if diffs:
        raise _different(model_dir, diffs, resume)
    reached = trained_to(model_dir)
    max_iters = record.section("train")["max_iters"]
    if reached < 0:  # this model, begun by a command stopped before its first checkpoint:
        return Plan.RESUME  # nothing trained to lose, nothing to continue: start it
    if not resume:
        raise DomainGPTError(
            f"{model_dir} already holds this model (trained to iteration {reached}); pass "
            "--resume to continue it (with --set train.max_iters=N to extend it)"
            + _replace_hint(model_dir)
        )
    if reached > max_iters:
        raise DomainGPTError(
            f"{model_dir} holds a model trained to iteration {reached}, past "
            f"train.max_iters={max_iters}; a model is never shortened: keep train.max_iters "
            f"at {reached} or more to continue it, or use another --out"
        )
    return Plan.RESUME


def prepare_model_dir(
    model_dir: Path, record: ModelRecord, *, resume: bool, overwrite: bool
) -> bool:
    """Claim ``model_dir`` for this run (see :func:`check_model_dir`); True when there is
    earlier work to resume. A continued model's ``run.json`` gets this run's record, and
    an extension (``max_iters`` raised) is listed under ``extensions``."""
    plan = check_model_dir(model_dir, record, resume=resume, overwrite=overwrite)
    if plan == Plan.RESUME:
        old = read_record(model_dir) or ModelRecord()
        updated = record.over(old)
        before = old.section("train").get("max_iters")
        after = record.section("train")["max_iters"]
        if before is not None and after > before:
            reached = max(trained_to(model_dir), 0)
            extension = {"from_iteration": reached, "max_iters": [before, after]}
            updated = replace(updated, extensions=[*(old.extensions or []), extension])
        if updated != old:
            write_record(model_dir, updated)
        return True
    if plan == Plan.REPLACE:
        remove_model_dir(model_dir, "use another --out")
    model_dir.mkdir(parents=True, exist_ok=True)
    write_record(model_dir, record)
    return False


def recorded_config(model_dir: Path, overrides: list[str]) -> RunConfig | None:
    """The configuration a model was trained with (its ``run.json``), with ``overrides``
    (``--set``) applied; None when there is no model there."""
    record = read_record(model_dir)
    if record is None:
        return None
    recorded = record.config
    source = str(model_dir / "run.json")
    sections = {k: v for k, v in recorded.items() if k in TRAIN_SECTIONS}
    train = sections.get("train")
    if isinstance(train, dict) and train.get("step") in REMOVED_STEPS:
        # A step of an earlier version: it changed only how fast the model trained.
        sections["train"] = {**train, "step": "plain"}
    try:
        base = from_dict(sections, source=source)
    except ConfigError as e:
        raise ConfigError(
            f"{source} records a configuration this domaingpt cannot read ({e}); give "
            "--preset and the --set options it was trained with"
        ) from None
    base = replace(base, preset=str(recorded.get("preset", "custom")))
    return apply_overrides(base, overrides).validate()


def final_checkpoint(model_dir: Path) -> CheckpointInfo | None:
    history = list_checkpoints(model_dir / "checkpoints", "iter")
    return history[-1] if history else None


def model_outputs(model_dir: Path) -> list[Path]:
    """The files that define a trained model for the stages after training."""
    files = [model_dir / n for n in ("run.json", "metrics.jsonl", "samples.jsonl", "loss.png")]
    for c in list_checkpoints(model_dir / "checkpoints", "iter"):
        files += [c.json_path, c.tensor_path]  # the weights too: verified by content
    return [f for f in files if f.is_file()]


def model_state(model_dir: Path, record: ModelRecord, max_iters: int) -> ModelState:
    """What a study does with a model directory (see :class:`ModelState`): ``different``
    also when it was trained past ``max_iters``."""
    if damaged_record(model_dir):
        return ModelState.DAMAGED
    run_json = model_dir / "run.json"
    if not run_json.exists():
        empty = not model_dir.exists() or not any(model_dir.iterdir())
        return ModelState.ABSENT if empty else ModelState.DIFFERENT
    try:
        old = read_record(model_dir) or ModelRecord()
    except DomainGPTError:
        return ModelState.DIFFERENT
    if config_differences(old, record) or trained_to(model_dir) > max_iters:
        return ModelState.DIFFERENT
    if old.section("train").get("max_iters", max_iters) < max_iters:
        return ModelState.EXTEND
    last = final_checkpoint(model_dir)
    metrics = model_dir / "metrics.jsonl"
    if last is None or last.iteration != max_iters or not metrics.exists():
        return ModelState.PARTIAL
    rows = read_jsonl(metrics)
    if not rows or "val_loss_full" not in rows[-1] or not (model_dir / "loss.png").exists():
        return ModelState.PARTIAL
    if damaged_checkpoints(model_dir / "checkpoints", "iter"):
        return ModelState.PARTIAL  # resumed from before the damage: see training.loop._restore
    return ModelState.FINISHED

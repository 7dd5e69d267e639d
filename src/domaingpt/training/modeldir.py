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
from dataclasses import replace
from pathlib import Path

import torch

from domaingpt import __version__
from domaingpt.core.config import (
    REMOVED_STEPS,
    RUNTIME_TRAIN_KEYS,
    TRAIN_SECTIONS,
    RunConfig,
    apply_overrides,
    from_dict,
)
from domaingpt.core.io import read_jsonl, write_json
from domaingpt.core.loggers import WANDB_ID_FILE
from domaingpt.core.owned import remove_owned
from domaingpt.data.corpus import check_model_name
from domaingpt.data.vocab import Vocab
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


def run_record(
    cfg: RunConfig,
    corpus_name: str,
    corpus_sha: str,
    vocab: Vocab,
    corpus_path: str | Path | None = None,
) -> dict:
    """What ``run.json`` records about a model (``corpus_path`` made absolute)."""
    record = {
        "corpus": corpus_name,
        "corpus_sha256": corpus_sha,
        "vocab_fingerprint": vocab.fingerprint,
        "config": cfg.to_dict(),
        "domaingpt_version": __version__,
        "torch_version": torch.__version__,
    }
    if corpus_path is not None:
        record["corpus_path"] = str(Path(corpus_path).resolve())
    return record


def config_differences(old: dict, new: dict) -> list[str]:
    """What makes ``new`` another model than ``old``: corpus, vocabulary, configuration
    (neither the keys that only change how fast it trains, nor an extendable one)."""
    diffs = []
    for key in ("corpus", "corpus_sha256", "vocab_fingerprint"):
        if old.get(key) != new.get(key):
            diffs.append(key)
    for section, values in new["config"].items():
        if not isinstance(values, dict):
            continue
        before = old.get("config", {}).get(section, {})
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


def read_record(model_dir: Path) -> dict | None:
    """A model's ``run.json``; None when there is none; an error when it is unreadable."""
    run_json = model_dir / "run.json"
    if not run_json.exists():
        return None
    try:
        record = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise DomainGPTError(
            f"{run_json} is unreadable, so {model_dir} cannot be continued; restore its "
            f"run.json or use another --out{_replace_hint(model_dir)}"
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


def check_model_dir(model_dir: Path, record: dict, *, resume: bool, overwrite: bool) -> str:
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
        return "fresh"
    record_there = (model_dir / "run.json").is_file()
    if overwrite and is_model_dir(model_dir):
        return "replace"
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
    old = read_record(model_dir) or {}
    diffs = config_differences(old, record)
    if diffs:
        raise _different(model_dir, diffs, resume)
    reached = trained_to(model_dir)
    max_iters = record["config"]["train"]["max_iters"]
    if reached < 0:  # this model, begun by a command stopped before its first checkpoint:
        return "resume"  # nothing trained to lose, nothing to continue: start it
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
    return "resume"


def prepare_model_dir(model_dir: Path, record: dict, *, resume: bool, overwrite: bool) -> bool:
    """Claim ``model_dir`` for this run (see :func:`check_model_dir`); True when there is
    earlier work to resume. A continued model's ``run.json`` gets this run's record, and
    an extension (``max_iters`` raised) is listed under ``extensions``."""
    plan = check_model_dir(model_dir, record, resume=resume, overwrite=overwrite)
    if plan == "resume":
        old = read_record(model_dir) or {}
        updated = {**old, **record}
        before = old["config"]["train"].get("max_iters")
        after = record["config"]["train"]["max_iters"]
        if before is not None and after > before:
            reached = max(trained_to(model_dir), 0)
            extension = {"from_iteration": reached, "max_iters": [before, after]}
            updated["extensions"] = [*old.get("extensions", []), extension]
        if updated != old:
            write_json(model_dir / "run.json", updated)
        return True
    if plan == "replace":
        remove_model_dir(model_dir, "use another --out")
    model_dir.mkdir(parents=True, exist_ok=True)
    write_json(model_dir / "run.json", record)
    return False


def recorded_config(model_dir: Path, overrides: list[str]) -> RunConfig | None:
    """The configuration a model was trained with (its ``run.json``), with ``overrides``
    (``--set``) applied; None when there is no model there."""
    record = read_record(model_dir)
    if record is None:
        return None
    recorded = record["config"]
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


def model_state(model_dir: Path, record: dict, max_iters: int) -> str:
    """What a study does with a model directory: ``absent`` (train), ``different``
    (another configuration, trained past ``max_iters``, or not a model: retrain),
    ``damaged`` (a model whose ``run.json`` is missing or unreadable: refused unless
    forced), ``extend`` (trained with a smaller ``max_iters``: continue it), ``partial``
    (interrupted, or a history checkpoint damaged: continue it) or ``finished`` (skip)."""
    if damaged_record(model_dir):
        return "damaged"
    run_json = model_dir / "run.json"
    if not run_json.exists():
        return "absent" if not model_dir.exists() or not any(model_dir.iterdir()) else "different"
    try:
        old = read_record(model_dir) or {}
    except DomainGPTError:
        return "different"
    if config_differences(old, record) or trained_to(model_dir) > max_iters:
        return "different"
    if old["config"].get("train", {}).get("max_iters", max_iters) < max_iters:
        return "extend"
    last = final_checkpoint(model_dir)
    metrics = model_dir / "metrics.jsonl"
    if last is None or last.iteration != max_iters or not metrics.exists():
        return "partial"
    rows = read_jsonl(metrics)
    if not rows or "val_loss_full" not in rows[-1] or not (model_dir / "loss.png").exists():
        return "partial"
    if damaged_checkpoints(model_dir / "checkpoints", "iter"):
        return "partial"  # resumed from before the damage: see training.loop._restore
    return "finished"

"""The run directory: where every command of one study reads and writes.

::

    runs/NAME/
      vocab.json              the vocabulary of the models trained here
      stats/                  character statistics (CSV, Markdown, PNG)
      models/<corpus>/        one trained model (see domaingpt.training.loop)
      evaluate/               zero-shot loss matrix (eval/ in runs made before the rename)
      adapt/                  few-shot adaptation runs and their models
      softmax/ saliency/ quality/ ...   one folder per stage (settings.json, claims.csv)
      report.html, report.md, report/  the report
      stages/<stage>.json     each stage's record (status, key, outputs)
      study.toml, study.json, versions.json, log.txt

The models trained in a run share ``vocab.json``: the union of the characters of the
study's corpora (so that every model can be scored on every corpus), or the tokenizer of
the models trained elsewhere; such a model keeps its own (:meth:`RunDir.model_vocab`).
This module is the one place that knows where things are: the run's models, what their
``run.json`` says, the adapted models, and the stage records.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from domaingpt.context.records import StageRecord, StageStatus
from domaingpt.core.filelock import lock_exclusive, read_at, write_at
from domaingpt.core.io import open_no_follow, write_json
from domaingpt.core.limits import MODEL_LIMITS, bounded_float, bounded_int
from domaingpt.core.replicates import split_replicate
from domaingpt.data.corpus import (
    REGISTRY,
    Corpus,
    check_model_name,
    data_dir_from_env,
    resolve_corpus,
    sha256_file,
    unsafe_name_reason,
)
from domaingpt.data.tokenizer import AnyVocab, vocab_from_json
from domaingpt.errors import CorpusError, DomainGPTError
from domaingpt.model.checkpoint import CheckpointInfo, find_checkpoint, list_checkpoints
from domaingpt.training.modeldir import ModelRecord, load_record

DEFAULT_VAL_FRACTION = 0.1
_ADAPT_DIR = re.compile(r"^(?P<source>.+)__to__(?P<target>.+)$")


@dataclass(frozen=True)
class ModelEntry:
    """A trained model of a run: its directory and what its ``run.json`` says."""

    name: str
    directory: Path
    corpus: str
    corpus_sha256: str | None
    val_fraction: float
    block_size: int
    config: dict[str, Any] = field(default_factory=dict, compare=False)
    corpus_path: str | None = None  # where the corpus file was when the model was trained

    @property
    def checkpoints(self) -> list[CheckpointInfo]:
        return list_checkpoints(self.directory / "checkpoints", "iter")

    @property
    def builtin(self) -> bool:
        """Trained on a built-in corpus (its name, and the registry's checksum if recorded)."""
        spec = REGISTRY.get(self.corpus)
        return spec is not None and self.corpus_sha256 in (None, spec.sha256)


@dataclass(frozen=True)
class AdaptedModel:
    """A model adapted from ``source`` to ``target`` (``adapt/<s>__to__<t>/<start>/seed<k>``)."""

    source: str
    target: str
    start: str  # final | early | scratch
    seed: int | None
    directory: Path

    @property
    def pair(self) -> str:
        return f"{self.source}__to__{self.target}"

    @property
    def checkpoints(self) -> list[CheckpointInfo]:
        ckdir = self.directory / "checkpoints"
        return list_checkpoints(ckdir if ckdir.is_dir() else self.directory, "iter")


def study_order(names: Iterable[str]) -> list[str]:
    """The built-in corpora in the study's order (Shakespeare, Math, Wikipedia), then the
    others alphabetically."""
    order = list(REGISTRY)

    def key(name: str) -> tuple[int, str, int]:
        corpus, replicate = split_replicate(name)  # a corpus's replicates follow it
        return (order.index(corpus) if corpus in order else len(order), corpus, replicate)

    return sorted(names, key=key)


def read_run_json(model_dir: Path) -> ModelRecord:
    """A model's ``run.json`` (empty when it is missing or unreadable); one whose
    ``config`` is not a table of tables is an error naming it (every reader indexes it)."""
    record, why = load_record(model_dir)
    if why == "damaged":
        raise DomainGPTError(
            f"{model_dir / 'run.json'} is damaged: its config is not a table of [model], "
            f"[train] and [data] tables; restore the file, or retrain the model (domaingpt "
            f"train {model_dir.name} --out {model_dir.parent.parent} --overwrite)"
        )
    return record or ModelRecord()


def run_config_of(info: CheckpointInfo, model_dir: Path | None = None) -> dict[str, Any]:
    """The training config recorded with a checkpoint (else in the model's run.json)."""
    config = info.meta.config
    if config is not None:
        return config
    return read_run_json(model_dir or info.json_path.parent.parent).config


def val_fraction_of(info: CheckpointInfo, model_dir: Path | None = None) -> float:
    """The validation fraction of the run that made a checkpoint (0.1 if unrecorded)."""
    data = run_config_of(info, model_dir).get("data", {})
    return _val_fraction(data, info.json_path)


def _val_fraction(data: dict[str, Any], where: Path) -> float:
    """``data.val_fraction`` of a recorded config (0.1 if unrecorded), checked."""
    value = bounded_float(
        f"{where}: data.val_fraction", data.get("val_fraction", DEFAULT_VAL_FRACTION)
    )
    if not 0 < value < 1:
        raise DomainGPTError(f"{where}: data.val_fraction must be in (0, 1), got {value}")
    return value


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -- layout ------------------------------------------------------------------------
    @property
    def vocab_path(self) -> Path:
        return self.root / "vocab.json"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model(self, corpus: str) -> Path:
        """``models/<corpus>``; a name that is not one safe path component is refused, so
        no model directory is ever ``models/`` itself, the run, or outside it."""
        return self.models / check_model_name(corpus)

    @property
    def adapted(self) -> Path:
        """``adapt/``: the adapted models (the adapt stage's folder), a model store of the
        run like ``models/``, read by the stages that compare with them."""
        return self.root / "adapt"

    def stage_folder(self, name: str, aliases: Iterable[str] = ()) -> Path:
        """Where the stage ``name`` keeps its files: ``<run>/<name>``, or the folder of an
        earlier name of the stage (``aliases``) when only that one exists (a run written
        before the stage was renamed)."""
        folder = self.root / name
        if not folder.exists():
            for alias in aliases:
                if (self.root / alias).is_dir():
                    return self.root / alias
        return folder

    # -- stage records ---------------------------------------------------------------
    def record_path(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

    def record(self, stage: str, aliases: Iterable[str] = ()) -> StageRecord | None:
        """The stage's record, or None when there is none or it is unreadable; the record
        of an earlier name of the stage (``aliases``) when it has none of its own."""
        path = self.record_path(stage)
        if not path.is_file():
            return next(filter(None, (self.record(a) for a in aliases)), None)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return StageRecord.from_dict(data, stage)

    def write_record(self, record: StageRecord) -> None:
        write_json(self.record_path(record.stage), record.to_dict())

    def status(self, stage: str, aliases: Iterable[str] = ()) -> StageStatus:
        """done, failed, blocked, or absent (never run)."""
        record = self.record(stage, aliases)
        return record.status if record is not None else StageStatus.ABSENT

    # -- models ------------------------------------------------------------------------
    def trained_models(self) -> list[str]:
        """Corpus names with a model directory holding at least one checkpoint."""
        if not self.models.is_dir():
            return []
        return sorted(
            d.name
            for d in self.models.iterdir()
            if unsafe_name_reason(d.name) is None
            and not d.is_symlink()
            and any((d / "checkpoints").glob("iter-*.json"))
        )

    def model_names(self, names: Iterable[str] = ()) -> list[str]:
        """The requested models (all trained ones, in the study's order, when ``names`` is
        empty); an error says what to train when one is missing."""
        names = [n for n in names if n]
        trained = study_order(self.trained_models())
        first = names[0] if names else "CORPUS"
        if not trained:
            raise DomainGPTError(
                f"no trained models in {self.models}; train one first with "
                f"`domaingpt train {first} --out {self.root}`"
            )
        if not names:
            return trained
        missing = [n for n in names if n not in trained]
        if missing:
            raise DomainGPTError(
                f"no model trained on {', '.join(repr(m) for m in missing)} in {self.models} "
                f"(trained: {', '.join(trained)}); train one with "
                f"`domaingpt train {missing[0]} --out {self.root}`"
            )
        return list(dict.fromkeys(names))

    def model_entries(self, names: Iterable[str] = ()) -> list[ModelEntry]:
        """:meth:`model_names` with what each model's ``run.json`` says."""
        entries = []
        for name in self.model_names(names):
            directory = self.model(name)
            record = read_run_json(directory)
            block = record.section("model").get("block_size") or (
                find_checkpoint(directory).block_size
            )
            block = bounded_int(
                f"{directory}: model.block_size", block, 1, MODEL_LIMITS["block_size"]
            )
            entries.append(
                ModelEntry(
                    name=name,
                    directory=directory,
                    corpus=record.corpus or name,
                    corpus_sha256=record.corpus_sha256,
                    val_fraction=_val_fraction(record.section("data"), directory / "run.json"),
                    block_size=block,
                    config=record.config,
                    corpus_path=record.corpus_path,
                )
            )
        return entries

    def corpus(
        self,
        model: str | ModelEntry,
        *,
        data_dir: str | Path | None = None,
        download: bool = True,
        given: Iterable[Corpus] = (),
        corpora_option: bool = False,
    ) -> Corpus:
        """The corpus a model of this run was trained on, its checksum verified.

        A built-in corpus is found by name as everywhere (data directory, cache,
        download). A user's text file is found without being named again: a file among
        ``given`` (a command's ``--corpora``) with the recorded SHA-256, else the path its
        ``run.json`` recorded, else a file of the same name in the data directory
        (``--data-dir``, then ``$DOMAINGPT_DATA``), each used only if its SHA-256 is the
        recorded one: the model's validation split is a function of those bytes. A moved
        or changed file is a one-line error naming it and the option that points at it
        (``--corpora PATH`` where the command has it: ``corpora_option``).
        """
        entry = model if isinstance(model, ModelEntry) else self.model_entries([model])[0]
        if entry.builtin:
            return _builtin_corpus(entry, data_dir, download)
        want = entry.corpus_sha256
        for c in given:
            if c.sha256 == want or (want is None and c.name == entry.corpus):
                return replace(c, name=entry.corpus)
        recorded = Path(entry.corpus_path) if entry.corpus_path else None
        filename = recorded.name if recorded else f"{entry.corpus}.txt"
        candidates = [recorded] if recorded else []
        ddir = data_dir_from_env(data_dir)
        if ddir is not None:
            candidates.append(ddir / filename)
        changed: list[tuple[Path, str]] = []
        for path in candidates:
            if path.is_file():
                sha = sha256_file(path)
                if want is None or sha == want:
                    found_in = "path" if path == recorded else "data-dir"
                    return Corpus(entry.corpus, path.resolve(), sha, None, found_in)
                changed.append((path, sha))
        point = f"the folder holding {filename} with --data-dir DIR"
        if corpora_option:
            point = f"the file with --corpora PATH, or {point}"
        if changed:
            path, sha = changed[0]
            why = (
                f"the corpus file {path} of model {entry.name!r} has changed since the model "
                f"was trained on it (sha256 {sha[:12]}…, trained on {(want or '')[:12]}…); put "
                "the original text back, or pass"
            )
        elif recorded is None:
            why = (
                f"model {entry.name!r} in {self.root} does not record where its corpus file "
                "is (trained by an older domaingpt); pass"
            )
        else:
            why = (
                f"the corpus file {recorded} of model {entry.name!r} is gone (moved or "
                "deleted); pass"
            )
        raise CorpusError(f"{why} {point}")

    def known_corpus(self, corpus: Corpus) -> Corpus:
        """A user's ``corpus`` under the name of the run's model trained on the same bytes
        (a copy of a user's file under another name is still that model's corpus), else
        as it is. Built-in corpora and names of the run's models are kept."""
        trained = self.trained_models()
        if corpus.builtin or corpus.name in trained:
            return corpus
        for name in trained:
            record = read_run_json(self.model(name))
            if record.corpus_sha256 == corpus.sha256:
                return replace(corpus, name=record.corpus or name)
        return corpus

    def adapted_models(self, *, scratch: bool = False) -> list[AdaptedModel]:
        """Adapted models with at least one checkpoint, by pair, start and seed; runs from
        ``scratch`` (random weights, no source model) only when asked for."""
        found = []
        if not self.adapted.is_dir():
            return found
        for seed_dir in sorted(self.adapted.glob("*/*/seed*")):
            start_dir = seed_dir.parent
            m = _ADAPT_DIR.match(start_dir.parent.name)
            if not m or not seed_dir.is_dir() or (start_dir.name == "scratch" and not scratch):
                continue
            digits = seed_dir.name[len("seed") :]
            adapted = AdaptedModel(
                m["source"],
                m["target"],
                start_dir.name,
                int(digits) if digits.isdigit() else None,
                seed_dir,
            )
            if adapted.checkpoints:
                found.append(adapted)
        return found

    def adaptation_start(self, adapted: AdaptedModel, section: str) -> CheckpointInfo:
        """The source checkpoint ``adapted`` started from, as its final checkpoint records
        it (``source_iteration``); the error names what to redo, or the ``[section]``
        setting ``adapted = false`` that leaves adapted models out."""
        final = adapted.checkpoints[-1]
        iteration = final.meta.source_iteration
        if iteration is None:
            raise DomainGPTError(
                f"{final.json_path} does not record 'source_iteration' (the {adapted.source} "
                f"checkpoint its adaptation started from): delete {adapted.directory} and run "
                f"`domaingpt adapt --out {self.root}` again, or set adapted = false under "
                f"[{section}]"
            )
        return find_checkpoint(self.model(adapted.source), iteration)

    def vocab(self) -> AnyVocab:
        """The run's vocabulary (``vocab.json``), else the first model checkpoint's."""
        if self.vocab_path.exists():
            try:
                data = json.loads(self.vocab_path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise DomainGPTError(
                    f"{self.vocab_path} is unreadable ({e}); delete it to rebuild"
                ) from None
            return vocab_from_json(data)
        names = self.model_names()
        return vocab_from_json(find_checkpoint(self.model(names[0])).vocab)

    def model_vocab(self, name: str) -> AnyVocab:
        """The vocabulary model ``name`` reads: its final checkpoint's. A run's models
        trained here share ``vocab.json``; one trained elsewhere keeps its own."""
        info = find_checkpoint(self.model(name))
        if info.vocab is None:
            return self.vocab()
        return vocab_from_json(info.vocab)

    def vocab_corpora(self) -> list[str]:
        """The corpora the run's vocabulary was built from (``vocab.json``), in order."""
        try:
            record = json.loads(self.vocab_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        corpora = record.get("corpora") if isinstance(record, dict) else None
        return [str(c) for c in corpora] if isinstance(corpora, dict) else []

    # -- writing -----------------------------------------------------------------------
    def check_writable(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise DomainGPTError(f"--out {self.root} is a file; give a directory")

    def refuse_links(self) -> None:
        """Refuse a run directory holding a symbolic link anywhere inside it.

        Every write of a command goes inside its run directory; a link planted there (a
        log, a metrics file, a model folder pointing elsewhere) would carry a write, an
        append or a deletion outside it. Atomic writes replace a link rather than follow
        it and appends refuse one (``O_NOFOLLOW``), but a linked *directory* would still
        be followed, so a run with any link is refused before anything is written.
        """
        if not self.root.is_dir():
            return
        for folder, dirs, files in os.walk(self.root):  # never follows links
            for name in sorted(dirs + files):
                path = Path(folder) / name
                if path.is_symlink():
                    raise DomainGPTError(
                        f"{path} is a symbolic link; domaingpt never writes through one in a "
                        "run directory: remove the link (or copy what it points to there)"
                    )

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the run directory by this process.

        An OS file lock (``flock``; ``msvcrt.locking`` on Windows) on ``.lock``: the kernel drops it when the process
        ends, however it ends, so a crashed run never leaves the directory stuck. The
        lock file is never followed through a symbolic link, and a run directory holding
        a link is refused (:meth:`refuse_links`). A directory that cannot be written is
        an error naming it. A command that fails leaves no lock file it made (nor the run
        directory, when it made that and wrote nothing else). Under torchrun only the
        writing rank (rank 0) takes it.
        """
        if os.environ.get("RANK", "0") != "0":
            yield
            return
        self.check_writable()
        created = _first_missing(self.root)
        path = self.root / ".lock"
        had_lock = path.exists() or path.is_symlink()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = open_no_follow(path, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            raise unwritable(self.root, e) from None
        failed, held = True, False
        try:
            _take(fd, path, self.root)
            held = True
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise unwritable(self.root, PermissionError(errno.EACCES, "Permission denied"))
            self.refuse_links()
            pid = str(os.getpid()).encode()
            if read_at(fd, 64, 0) != pid:  # the same process again changes nothing
                os.ftruncate(fd, 0)
                write_at(fd, pid, 0)
            yield
            failed = False
        finally:
            if failed and held and not had_lock:
                # Removed while still held: a process that opened it meanwhile finds
                # the name gone (see _take) instead of a lock nobody else sees.
                with suppress(OSError):
                    if os.path.samestat(os.fstat(fd), os.lstat(path)):
                        path.unlink()
            os.close(fd)  # closing releases the lock
            if created is not None and [p.name for p in self.root.iterdir()] in ([], [".lock"]):
                # A command that failed before writing anything leaves no empty run behind,
                # nor the parent folders it made for it.
                path.unlink(missing_ok=True)
                with suppress(OSError):
                    for folder in (self.root, *self.root.parents):
                        folder.rmdir()
                        if folder == created:
                            break


def _take(fd: int, path: Path, root: Path) -> None:
    """Lock the open lock file ``fd`` (``flock`` on POSIX; see :mod:`domaingpt.core.filelock`),
    or say who holds it. A lock on a file that is
    no longer ``path`` (removed by a failing holder meanwhile) counts as held."""
    try:
        lock_exclusive(fd)
        current = os.lstat(path)
    except (BlockingIOError, FileNotFoundError):
        current = None
    if current is None or not os.path.samestat(os.fstat(fd), current):
        holder = read_at(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        raise DomainGPTError(
            f"run directory {root} is in use by another domaingpt process "
            f"(pid {holder}); wait for it to finish or use another --out"
        )


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (``None``: it exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            break
        missing = folder
    return missing


def unwritable(root: Path, error: OSError) -> DomainGPTError:
    """The one-line error for a run directory that cannot be created or written."""
    why = error.strerror or str(error)
    return DomainGPTError(f"cannot write the run directory {root} ({why}); give a writable --out")


def _builtin_corpus(entry: ModelEntry, data_dir: str | Path | None, download: bool) -> Corpus:
    """A built-in corpus: where it is found by name (data directory, cache), else at
    the path the model recorded (its checksum verified), else downloaded."""
    spec = REGISTRY[entry.corpus]
    try:
        return resolve_corpus(entry.corpus, data_dir, download=False)
    except CorpusError:
        recorded = Path(entry.corpus_path) if entry.corpus_path else None
        if recorded is not None and recorded.is_file() and sha256_file(recorded) == spec.sha256:
            return Corpus(spec.name, recorded, spec.sha256, spec, "path")
        if not download:
            raise
    return resolve_corpus(entry.corpus, data_dir, download=True)

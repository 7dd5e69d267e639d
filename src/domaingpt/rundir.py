"""The run directory: where every command of one study reads and writes.

::

    runs/NAME/
      vocab.json              the study's shared character vocabulary
      stats/                  character statistics (CSV, Markdown, PNG)
      models/<corpus>/        one trained model (see domaingpt.train)
      eval/                   zero-shot loss matrix
      adapt/                  few-shot adaptation runs and their models
      probe/                  softmax inspection
      saliency/               gradient-based attributions
      report.html, report.md  the report

All models of a run share ``vocab.json``: the union of the characters of the study's
corpora, so that every model can be scored on every corpus.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from .corpus import REGISTRY, Corpus, resolve_corpus
from .errors import DomainGPTError
from .io import write_json
from .vocab import Vocab


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def vocab_path(self) -> Path:
        return self.root / "vocab.json"

    @property
    def stats(self) -> Path:
        return self.root / "stats"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model(self, corpus: str) -> Path:
        return self.models / corpus

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def adapt(self) -> Path:
        return self.root / "adapt"

    @property
    def probe(self) -> Path:
        return self.root / "probe"

    @property
    def saliency(self) -> Path:
        return self.root / "saliency"

    def trained_models(self) -> list[str]:
        """Corpus names with a model directory holding at least one checkpoint."""
        if not self.models.is_dir():
            return []
        return sorted(
            d.name for d in self.models.iterdir() if any((d / "checkpoints").glob("iter-*.json"))
        )

    def check_writable(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise DomainGPTError(f"--out {self.root} is a file; give a directory")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive use of the run directory by this process.

        An OS file lock (``flock``) on ``.lock``: the kernel drops it when the process
        ends, however it ends, so a crashed run never leaves the directory stuck.
        Under torchrun only the writing rank (rank 0) takes it.
        """
        if os.environ.get("RANK", "0") != "0":
            yield
            return
        self.check_writable()
        created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                raise DomainGPTError(
                    f"run directory {self.root} is in use by another domaingpt process "
                    f"(pid {holder}); wait for it to finish or use another --out"
                ) from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            yield
        finally:
            os.close(fd)  # closing releases the lock
            if created and [p.name for p in self.root.iterdir()] == [".lock"]:
                # A command that failed before writing anything leaves no empty run behind.
                path.unlink(missing_ok=True)
                with suppress(OSError):
                    self.root.rmdir()


def study_vocab(run: RunDir, corpora: list[Corpus]) -> Vocab:
    """The run's vocabulary: loaded from ``vocab.json``, or built from ``corpora`` and saved.

    Built once per run, so a model trained later in the same run shares the ids of the
    earlier ones.
    """
    if run.vocab_path.exists():
        try:
            data = json.loads(run.vocab_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise DomainGPTError(
                f"{run.vocab_path} is unreadable ({e}); delete it to rebuild"
            ) from None
        return Vocab.from_json(data)
    vocab = Vocab.from_texts(chunk for c in corpora for chunk in c.iter_text())
    record = vocab.to_json()
    record["corpora"] = {c.name: c.sha256 for c in corpora}
    write_json(run.vocab_path, record)
    return vocab


def default_vocab_corpora(extra: list[Corpus], data_dir: str | Path | None) -> list[Corpus]:
    """The three built-in corpora plus any user corpora being used: the default study."""
    names = {c.name for c in extra}
    builtins = [resolve_corpus(n, data_dir) for n in REGISTRY if n not in names]
    return builtins + list(extra)

"""Encoded corpora on disk, the train/val split, and evaluation windows.

Ids are cached as a ``numpy.memmap`` keyed by the corpus checksum and the vocabulary
fingerprint: the second run of anything starts at once, and a corpus larger than RAM
is read page by page instead of being loaded whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domaingpt.core.io import atomic_write_text
from domaingpt.data.corpus import Corpus, cache_dir, sha256_once
from domaingpt.data.vocab import Vocab
from domaingpt.errors import CorpusError, DomainGPTError


@dataclass(frozen=True)
class EncodedCorpus:
    name: str
    ids: np.ndarray  # a read-only memmap
    n_unk: int
    sha256: str

    def split(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic split: the last ``val_fraction`` of the text is validation."""
        n_train = int(len(self.ids) * (1.0 - val_fraction))
        return self.ids[:n_train], self.ids[n_train:]

    def checked_split(self, val_fraction: float, block_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The split, refusing a corpus too short to give one window to each side."""
        train, val = self.split(val_fraction)
        need = block_size + 1
        if len(train) < need or len(val) < need:
            raise CorpusError(
                f"corpus {self.name!r} has {len(self.ids):,} characters: too short for "
                f"block_size {block_size} with val_fraction {val_fraction} (each split needs "
                f"at least {need}); use a longer text or a smaller model.block_size"
            )
        return train, val


def encoded_path(corpus: Corpus, vocab: Vocab) -> Path:
    suffix = "u16" if vocab.dtype == np.uint16 else "u32"
    return (
        cache_dir()
        / "encoded"
        / f"{corpus.name}-{corpus.sha256[:16]}-{vocab.fingerprint[:12]}.{suffix}"
    )


def encode_corpus(corpus: Corpus, vocab: Vocab) -> EncodedCorpus:
    """Encode once, then reuse the memmap; the sidecar JSON records the ``<unk>`` count
    and the SHA-256 of the ids file, checked on use (once per process per file): a
    damaged or altered cache entry is rebuilt, with a warning saying so."""
    path = encoded_path(corpus, vocab)
    meta_path = path.with_suffix(path.suffix + ".json")
    if path.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            recorded = meta.get("sha256")
            if recorded is not None:  # entries of older versions hold none: rebuilt quietly
                if sha256_once(path) == recorded:
                    ids = np.memmap(path, dtype=vocab.dtype, mode="r")
                    if len(ids) == meta["n_ids"]:
                        return EncodedCorpus(corpus.name, ids, int(meta["n_unk"]), corpus.sha256)
                warnings.warn(
                    f"the encoded corpus cache {path} does not match its recorded checksum "
                    "(damaged or altered): rebuilt it",
                    stacklevel=2,
                )
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # a damaged cache entry is rebuilt below
    # Stream: chunk by chunk into a temp file, so memory stays bounded for any corpus size.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    n_ids = n_unk = 0
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for chunk in corpus.iter_text():
                enc = vocab.encode(chunk)
                data = enc.ids.tobytes()
                out.write(data)
                digest.update(data)
                n_ids += len(enc.ids)
                n_unk += enc.n_unk
        # The sidecar first: a reader pairs the new ids only with the new checksum.
        meta = {"n_ids": n_ids, "n_unk": n_unk, "sha256": digest.hexdigest()}
        atomic_write_text(meta_path, json.dumps(meta))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    ids = np.memmap(path, dtype=vocab.dtype, mode="r")
    return EncodedCorpus(corpus.name, ids, n_unk, corpus.sha256)


def window_starts(n_ids: int, block_size: int, max_windows: int | None = None) -> np.ndarray:
    """Starts of disjoint windows covering ``ids[0 : n_ids]``; each target predicted once.

    Window i covers inputs ``ids[s : s + T]`` and targets ``ids[s + 1 : s + T + 1]`` with
    ``s = i·T``. The last window is shifted left to end at the final id; the positions it
    shares with the window before are masked out by :func:`window_mask`. With
    ``max_windows``, that many windows spread evenly over the split are kept instead.
    """
    n_targets = n_ids - 1
    if n_targets < block_size:
        raise DomainGPTError(f"need at least block_size + 1 = {block_size + 1} ids, got {n_ids}")
    starts = np.arange(0, n_targets - block_size + 1, block_size)
    if starts[-1] + block_size < n_targets:
        starts = np.append(starts, n_targets - block_size)
    if max_windows is not None and len(starts) > max_windows:
        pick = np.linspace(0, len(starts) - 1, max_windows).round().astype(int)
        starts = starts[np.unique(pick)]
    return starts


def window_mask(starts: np.ndarray, block_size: int) -> np.ndarray:
    """(n_windows, T) bool: which targets of each window are scored (no target twice)."""
    mask = np.ones((len(starts), block_size), dtype=bool)
    for i in range(1, len(starts)):
        overlap = starts[i - 1] + block_size - starts[i]
        if overlap > 0:
            mask[i, :overlap] = False
    return mask


def window_ids(ids: np.ndarray, starts: np.ndarray, block_size: int) -> np.ndarray:
    """(len(starts), block_size + 1) int64: the ids of each window, inputs ``[:, :-1]``
    and targets ``[:, 1:]``."""
    return ids[starts[:, None] + np.arange(block_size + 1)].astype(np.int64)


@contextmanager
def cache_kept_on_refusal() -> Iterator[None]:
    """Inside the block, a refused command (a :class:`DomainGPTError`, or an OSError the
    user can act on) takes back the
    encoded corpora it added to the shared cache: a command that wrote nothing of its
    own leaves no cache entry for a vocabulary no run may ever use. Entries that were
    there before are never touched."""
    folder = cache_dir() / "encoded"
    before = set(folder.iterdir()) if folder.is_dir() else set()
    try:
        yield
    except (DomainGPTError, OSError):  # the two ways a command is refused (cli.main)
        if folder.is_dir():
            for path in set(folder.iterdir()) - before:
                if not path.name.startswith("."):  # another process's temp file: its own
                    path.unlink(missing_ok=True)
        raise

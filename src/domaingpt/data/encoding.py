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
from domaingpt.data.tokenizer import AnyVocab, is_subword
from domaingpt.errors import CorpusError, DomainGPTError


@dataclass(frozen=True)
class EncodedCorpus:
    name: str
    ids: np.ndarray  # a read-only memmap
    n_unk: int
    sha256: str
    #: The characters each id covers (a read-only memmap); None: one per id.
    lengths: np.ndarray | None = None

    def split(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic split: the last ``val_fraction`` of the ids is validation."""
        n_train = int(len(self.ids) * (1.0 - val_fraction))
        return self.ids[:n_train], self.ids[n_train:]

    def split_lengths(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray] | None:
        """:attr:`lengths` split as :meth:`split` splits the ids (None: one per id)."""
        if self.lengths is None:
            return None
        n_train = int(len(self.ids) * (1.0 - val_fraction))
        return self.lengths[:n_train], self.lengths[n_train:]

    def val_offsets(self, val_fraction: float) -> np.ndarray:
        """The character of the text at which each validation id starts, then the
        text's end: where the validation split lies in characters, whatever the
        vocabulary (a byte-level piece inside a character shares its offset)."""
        n_train = int(len(self.ids) * (1.0 - val_fraction))
        if self.lengths is None:
            return np.arange(n_train, len(self.ids) + 1, dtype=np.int64)
        start = int(np.sum(self.lengths[:n_train], dtype=np.int64))
        ends = np.cumsum(self.lengths[n_train:], dtype=np.int64)
        return start + np.concatenate([[0], ends])

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


def encoded_path(corpus: Corpus, vocab: AnyVocab) -> Path:
    suffix = "u16" if vocab.dtype == np.uint16 else "u32"
    return (
        cache_dir()
        / "encoded"
        / f"{corpus.name}-{corpus.sha256[:16]}-{vocab.fingerprint[:12]}.{suffix}"
    )


def lengths_path(path: Path) -> Path:
    """Where the characters of each id of the encoded corpus at ``path`` are kept."""
    return path.with_suffix(".len")


def _cached(corpus: Corpus, vocab: AnyVocab, path: Path, meta_path: Path) -> EncodedCorpus | None:
    """The cache entry at ``path``, when its files match the checksums its sidecar
    records (None: none there, or an entry of an older version)."""
    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        recorded = meta.get("sha256")
        if recorded is None:  # entries of older versions hold none: rebuilt quietly
            return None
        lengths = None
        if sha256_once(path) == recorded:
            ids = np.memmap(path, dtype=vocab.dtype, mode="r")
            if is_subword(vocab):
                lpath = lengths_path(path)
                if sha256_once(lpath) == meta.get("lengths_sha256"):
                    lengths = np.memmap(lpath, dtype=np.uint32, mode="r")
                else:
                    ids = None
            if ids is not None and len(ids) == meta["n_ids"]:
                return EncodedCorpus(corpus.name, ids, int(meta["n_unk"]), corpus.sha256, lengths)
        warnings.warn(
            f"the encoded corpus cache {path} does not match its recorded checksum "
            "(damaged or altered): rebuilt it",
            stacklevel=3,
        )
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        pass  # a damaged cache entry is rebuilt
    return None


def encode_corpus(corpus: Corpus, vocab: AnyVocab) -> EncodedCorpus:
    """Encode once, then reuse the memmap; the sidecar JSON records the ``<unk>`` count
    and the SHA-256 of the ids file (and of a subword vocabulary's lengths file),
    checked on use (once per process per file): a damaged or altered cache entry is
    rebuilt, with a warning saying so. A subword tokenizer that cannot give back a
    character of the corpus is refused (:meth:`SubwordVocab.check_text`)."""
    path = encoded_path(corpus, vocab)
    meta_path = path.with_suffix(path.suffix + ".json")
    cached = _cached(corpus, vocab, path, meta_path)
    if cached is not None:
        return cached
    subword = is_subword(vocab)
    seen: set[str] = set()

    def chunks() -> Iterator[str]:
        for chunk in corpus.iter_text():
            if subword:
                seen.update(chunk)
            yield chunk

    # Stream: chunk by chunk into temp files, so memory stays bounded for any corpus size.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    ltmp = path.with_name(f".{path.name}.{os.getpid()}.len.tmp")
    n_ids = n_unk = 0
    digest, ldigest = hashlib.sha256(), hashlib.sha256()
    try:
        with open(tmp, "wb") as out, open(ltmp, "wb") as lout:
            for enc in vocab.encode_stream(chunks()):
                data = enc.ids.tobytes()
                out.write(data)
                digest.update(data)
                if enc.lengths is not None:
                    data = enc.lengths.astype(np.uint32).tobytes()
                    lout.write(data)
                    ldigest.update(data)
                n_ids += len(enc.ids)
                n_unk += enc.n_unk
        if subword:
            vocab.check_text(seen, f"corpus {corpus.name!r}")
        # The sidecar first: a reader pairs the new ids only with the new checksum.
        meta = {"n_ids": n_ids, "n_unk": n_unk, "sha256": digest.hexdigest()}
        if subword:
            meta["lengths_sha256"] = ldigest.hexdigest()
        atomic_write_text(meta_path, json.dumps(meta))
        if subword:
            os.replace(ltmp, lengths_path(path))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        ltmp.unlink(missing_ok=True)
    ids = np.memmap(path, dtype=vocab.dtype, mode="r")
    lengths = np.memmap(lengths_path(path), dtype=np.uint32, mode="r") if subword else None
    return EncodedCorpus(corpus.name, ids, n_unk, corpus.sha256, lengths)


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


def window_chars(
    lengths: np.ndarray | None, starts: np.ndarray, block_size: int
) -> np.ndarray | None:
    """(n_windows,) int64: the characters the scored targets of each window cover
    (targets ``ids[s + 1 : s + T + 1]`` under :func:`window_mask`); None when every id
    is one character (then it is the count of scored targets)."""
    if lengths is None:
        return None
    per = np.asarray(lengths)[starts[:, None] + 1 + np.arange(block_size)].astype(np.int64)
    return (per * window_mask(starts, block_size)).sum(axis=1)


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

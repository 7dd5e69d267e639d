"""Character vocabulary shared by every model of a study.

nanoGPT builds one vocabulary per dataset, so a Shakespeare model cannot even read a
Wikipedia page. Here a vocabulary is the union of the characters of all corpora of a
study plus an ``<unk>`` id, so every model can be scored on every corpus; characters
outside it are mapped to ``<unk>`` and counted, never dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .errors import DomainGPTError

UNK = "<unk>"
UNK_ID = 0


@dataclass(frozen=True)
class Encoded:
    """Ids of a text and how many of its characters were not in the vocabulary."""

    ids: np.ndarray
    n_unk: int
    unknown_chars: tuple[str, ...] = ()


@dataclass(frozen=True)
class Vocab:
    """Characters sorted by code point; id 0 is ``<unk>``, id i+1 is ``chars[i]``."""

    chars: tuple[str, ...]
    _codepoints: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if any(len(c) != 1 for c in self.chars):
            raise DomainGPTError("a vocabulary holds single characters only")
        if list(self.chars) != sorted(set(self.chars)):
            raise DomainGPTError("vocabulary characters must be unique and sorted by code point")
        cps = np.fromiter((ord(c) for c in self.chars), dtype=np.uint32, count=len(self.chars))
        object.__setattr__(self, "_codepoints", cps)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Vocab:
        chars: set[str] = set()
        for text in texts:  # chunks of a streamed corpus work as well as whole texts
            chars.update(text)
        return cls(tuple(sorted(chars)))

    def __len__(self) -> int:
        return len(self.chars) + 1

    @property
    def size(self) -> int:
        """Number of ids, ``<unk>`` included (the model's ``vocab_size``)."""
        return len(self)

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        """Smallest unsigned dtype that holds every id (uint16 unless the vocabulary is huge)."""
        return np.uint16 if self.size <= np.iinfo(np.uint16).max + 1 else np.uint32

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the character list: two vocabularies with the same one are the same."""
        return hashlib.sha256("".join(self.chars).encode("utf-8", "surrogatepass")).hexdigest()

    def token(self, i: int) -> str:
        return UNK if i == UNK_ID else self.chars[i - 1]

    def tokens(self) -> list[str]:
        """Every id's string, in id order (``<unk>`` first)."""
        return [UNK, *self.chars]

    def id_of(self, ch: str) -> int:
        j = int(np.searchsorted(self._codepoints, ord(ch)))
        if j < len(self.chars) and self.chars[j] == ch:
            return j + 1
        return UNK_ID

    def encode(self, text: str) -> Encoded:
        """Vectorised: code points are looked up with a binary search, not a dict per char."""
        cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        j = np.searchsorted(self._codepoints, cps)
        j_clip = np.minimum(j, max(len(self.chars) - 1, 0))
        known = (
            self._codepoints[j_clip] == cps if len(self.chars) else np.zeros(cps.shape, dtype=bool)
        )
        ids = np.where(known, j_clip + 1, UNK_ID).astype(self.dtype)
        n_unk = int((~known).sum())
        unknown = tuple(sorted({chr(c) for c in cps[~known][:10_000]})) if n_unk else ()
        return Encoded(ids=ids, n_unk=n_unk, unknown_chars=unknown)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.token(int(i)) for i in ids)

    def to_json(self) -> dict:
        return {"unk": UNK, "chars": "".join(self.chars), "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, data: dict) -> Vocab:
        try:
            vocab = cls(tuple(data["chars"]))
        except (KeyError, TypeError) as e:
            raise DomainGPTError(f"malformed vocabulary record: {e}") from None
        if "fingerprint" in data and data["fingerprint"] != vocab.fingerprint:
            raise DomainGPTError("vocabulary record does not match its fingerprint (file altered?)")
        return vocab

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False)

"""Character vocabulary shared by every model of a study.

nanoGPT builds one vocabulary per dataset, so a Shakespeare model cannot even read a
Wikipedia page. Here a vocabulary is the union of the characters of all corpora of a
study plus an ``<unk>`` id, so every model can be scored on every corpus; characters
outside it are mapped to ``<unk>`` and counted, never dropped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from domaingpt.data.charclass import describe_char
from domaingpt.errors import DomainGPTError

UNK = "<unk>"
UNK_ID = 0


def _codepoints(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


@dataclass(frozen=True)
class Encoded:
    """Ids of a text and how many of its characters were not in the vocabulary.

    ``lengths``: the characters each id covers, for a subword vocabulary
    (:mod:`domaingpt.data.subword`); ``None`` means one character per id.
    """

    ids: np.ndarray
    n_unk: int
    unknown_chars: tuple[str, ...] = ()
    lengths: np.ndarray | None = None


@dataclass(frozen=True)
class Vocab:
    """Characters sorted by code point; id 0 is ``<unk>``, id i+1 is ``chars[i]``."""

    chars: tuple[str, ...]
    kind: ClassVar[str] = "char"
    unk_id: ClassVar[int] = UNK_ID
    #: The id that stands for no information (a baseline, a replacement).
    neutral_id: ClassVar[int] = UNK_ID
    _codepoints: np.ndarray = field(init=False, repr=False, compare=False)
    _lut: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if any(len(c) != 1 for c in self.chars):
            raise DomainGPTError("a vocabulary holds single characters only")
        if list(self.chars) != sorted(set(self.chars)):
            raise DomainGPTError("vocabulary characters must be unique and sorted by code point")
        cps = np.fromiter((ord(c) for c in self.chars), dtype=np.uint32, count=len(self.chars))
        object.__setattr__(self, "_codepoints", cps)
        # Code point -> id lookup table; the last slot catches every code point above the
        # vocabulary's largest. At most 2.2 MB (uint16) even with emoji in the vocabulary.
        top = int(cps[-1]) + 1 if len(cps) else 0
        lut = np.full(top + 1, UNK_ID, dtype=self.dtype)
        lut[cps] = np.arange(1, len(cps) + 1, dtype=self.dtype)
        object.__setattr__(self, "_lut", lut)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> Vocab:
        """Every character of ``texts`` (whole texts or the chunks of a streamed corpus)."""
        seen = np.zeros(0x110000, dtype=bool)
        for text in texts:
            seen |= np.bincount(_codepoints(text), minlength=0x110000).astype(bool)
        return cls(tuple(chr(c) for c in np.flatnonzero(seen)))

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

    def label(self, i: int) -> str:
        """A printable label of id ``i`` (``<unk>``, or the character as
        :func:`~domaingpt.data.charclass.describe_char` writes it)."""
        return UNK if i == UNK_ID else describe_char(self.chars[i - 1])

    def tokens(self) -> list[str]:
        """Every id's string, in id order (``<unk>`` first)."""
        return [UNK, *self.chars]

    def id_of(self, ch: str) -> int:
        j = int(np.searchsorted(self._codepoints, ord(ch)))
        if j < len(self.chars) and self.chars[j] == ch:
            return j + 1
        return UNK_ID

    def encode(self, text: str) -> Encoded:
        """Vectorised: one table lookup per character, not a dict lookup in Python."""
        cps = _codepoints(text)
        ids = self._lut[np.minimum(cps, len(self._lut) - 1)]
        unk = ids == UNK_ID
        n_unk = int(unk.sum())
        unknown = tuple(sorted({chr(c) for c in cps[unk][:10_000]})) if n_unk else ()
        return Encoded(ids=ids, n_unk=n_unk, unknown_chars=unknown)

    def encode_stream(self, chunks: Iterable[str]) -> Iterator[Encoded]:
        """:meth:`encode` of each chunk of a streamed text (ids do not span characters)."""
        return (self.encode(chunk) for chunk in chunks)

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

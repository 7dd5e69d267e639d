"""A subword vocabulary: a Hugging Face ``tokenizers`` tokenizer (BPE, WordPiece, ...)
behind the interface of :class:`~domaingpt.data.vocab.Vocab`.

A model trained elsewhere may bring a subword tokenizer (``[study] models = { math =
"hf:..." }``); it keeps it, and the run's own models are trained with it too unless the
study says otherwise (``[train] vocabulary``). Every analysis runs on each model's own
tokens.

Characters stay the unit that compares models with different tokenizers: every token
knows how many characters of the text it covers (:attr:`Encoded.lengths`, from the
tokenizer's character offsets), so a loss summed over tokens is divided by the
characters those tokens cover (bits per character, as lm-evaluation-harness divides by
bytes for bits per byte). A token that ends inside a character (a byte-level BPE piece
of an emoji) covers no character; the token that completes it covers it.

A tokenizer must give every character of a corpus back: ``decode(encode(c)) == c``
(:meth:`SubwordVocab.check_text`). One that does not (a normalizer that lowercases or
folds accents, an unknown token) would score another text than the corpus, and is
refused with one line naming the character.

Texts are encoded line by line in batches (:meth:`SubwordVocab.encode_stream`): a corpus
is cut only after a newline that a non-space character follows, where GPT-2's
pre-tokenizer splits anyway, so a corpus of any size encodes in bounded memory to the
ids its whole text would give.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from domaingpt.core.extras import require
from domaingpt.data.charclass import describe_char, describe_token
from domaingpt.data.vocab import Encoded
from domaingpt.errors import DomainGPTError

KIND = "subword"
#: Characters of a text encoded in one batch call.
BATCH_CHARS = 1 << 20


def canonical_json(text: str, where: str) -> str:
    """``tokenizer.json`` with sorted keys: two files with one tokenizer read as one."""
    try:
        data = json.loads(text)
    except ValueError as e:
        raise DomainGPTError(f"{where} is not a tokenizer.json ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise DomainGPTError(f"{where} is not a tokenizer.json (no tokenizer model in it)")
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


class SubwordVocab:
    """The ids of a ``tokenizers`` tokenizer; ids are the tokenizer's own, unchanged."""

    kind: ClassVar[str] = KIND

    def __init__(self, tokenizer_json: str, where: str = "tokenizer.json") -> None:
        self.json = canonical_json(tokenizer_json, where)
        tk = require("tokenizers", "a subword tokenizer")
        try:
            self._tok = tk.Tokenizer.from_str(self.json)
        except Exception as e:  # the Rust side raises its own exception types
            raise DomainGPTError(f"{where} is not a tokenizer tokenizers can load ({e})") from None
        self.where = where
        self.size = int(self._tok.get_vocab_size(with_added_tokens=True))
        if self.size < 2:
            raise DomainGPTError(f"{where} has {self.size} token(s); a vocabulary needs two")
        unk = json.loads(self.json)["model"].get("unk_token")
        self.unk_id: int | None = self._tok.token_to_id(unk) if isinstance(unk, str) else None

    def __len__(self) -> int:
        return self.size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubwordVocab) and other.fingerprint == self.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return f"SubwordVocab({self.size} ids, {self.fingerprint[:12]})"

    def __getstate__(self) -> dict[str, Any]:
        return {"json": self.json, "where": self.where}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["json"], state["where"])  # type: ignore[misc]

    @property
    def dtype(self) -> type[np.unsignedinteger]:
        return np.uint16 if self.size <= np.iinfo(np.uint16).max + 1 else np.uint32

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical tokenizer JSON."""
        return hashlib.sha256(self.json.encode("utf-8", "surrogatepass")).hexdigest()

    @cached_property
    def neutral_id(self) -> int:
        """The id that stands for no information (a baseline, a replacement): the unknown
        token where the tokenizer has one, else a space's token, else id 0."""
        if self.unk_id is not None:
            return self.unk_id
        ids = self._tok.encode(" ", add_special_tokens=False).ids
        return int(ids[0]) if len(ids) == 1 else 0

    def token(self, i: int) -> str:
        """The text of id ``i`` (a piece of a character decodes to U+FFFD)."""
        return self._tok.decode([int(i)], skip_special_tokens=False)

    def tokens(self) -> list[str]:
        return [self.token(i) for i in range(self.size)]

    def label(self, i: int) -> str:
        """A printable label of id ``i``: a one-character token as
        :func:`~domaingpt.data.charclass.describe_char` writes it, a longer one quoted."""
        return describe_token(self.token(i))

    def id_of(self, text: str) -> int:
        """The id of ``text`` when it is one token, else :attr:`neutral_id`."""
        ids = self._tok.encode(text, add_special_tokens=False).ids
        return int(ids[0]) if len(ids) == 1 else self.neutral_id

    def _encoded(self, encodings: list[Any]) -> Encoded:
        n = sum(len(e.ids) for e in encodings)
        ids = np.fromiter((i for e in encodings for i in e.ids), dtype=self.dtype, count=n)
        lengths = []
        for e in encodings:  # each piece's offsets start at its own first character
            if not e.offsets:
                continue
            offsets = np.array(e.offsets, dtype=np.int64).reshape(-1, 2)
            # A token covers from its start to the next token's: the pieces of one
            # character share its offsets, and the last of them (which completes it)
            # covers it.
            starts = np.minimum.accumulate(offsets[::-1, 0])[::-1]
            lengths.append(np.diff(np.append(starts, offsets[:, 1].max())))
        lens = np.concatenate(lengths).astype(np.uint32) if lengths else np.zeros(0, np.uint32)
        n_unk = int(np.count_nonzero(ids == self.unk_id)) if self.unk_id is not None else 0
        return Encoded(ids=ids, n_unk=n_unk, lengths=lens)

    def encode(self, text: str) -> Encoded:
        """Ids of ``text`` and the characters each covers (they sum to ``len(text)``)."""
        return self._encoded(self._batch(_pieces(text)))

    def encode_stream(self, chunks: Iterable[str]) -> Iterator[Encoded]:
        """:meth:`encode` of the concatenated ``chunks``, cut only where a line ends."""
        held = ""
        for chunk in chunks:
            held += chunk
            cut = _last_cut(held)
            if cut > 0:
                yield self.encode(held[:cut])
                held = held[cut:]
        if held:
            yield self.encode(held)

    def _batch(self, pieces: list[str]) -> list[Any]:
        return self._tok.encode_batch(pieces, add_special_tokens=False) if pieces else []

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def check_text(self, chars: Iterable[str], where: str) -> None:
        """Refuse a tokenizer that does not give back every one of ``chars``."""
        chars = sorted(set(chars))
        encodings = self._batch(chars)
        for ch, e in zip(chars, encodings, strict=True):
            if self._tok.decode(e.ids, skip_special_tokens=False) != ch:
                raise DomainGPTError(
                    f"the tokenizer {self.where} cannot read {describe_char(ch)} of {where} "
                    "back (it decodes to "
                    f"{self._tok.decode(e.ids, skip_special_tokens=False)!r}); use a "
                    "tokenizer without a normalizer that changes text, whose alphabet "
                    "holds every character (e.g. byte-level BPE)"
                )

    def to_json(self) -> dict[str, Any]:
        return {"kind": KIND, "tokenizer": self.json, "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SubwordVocab:
        text = data.get("tokenizer")
        if not isinstance(text, str):
            raise DomainGPTError("malformed subword vocabulary record: no tokenizer")
        vocab = cls(text, "a recorded tokenizer")
        if "fingerprint" in data and data["fingerprint"] != vocab.fingerprint:
            raise DomainGPTError("vocabulary record does not match its fingerprint (file altered?)")
        return vocab

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False)


def _last_cut(text: str) -> int:
    """The last index ``i`` with ``text[i - 1] == "\\n"`` and ``text[i]`` no space (0: none)."""
    i = len(text) - 1
    while i > 0:
        j = text.rfind("\n", 0, i)
        if j < 0:
            return 0
        if not text[j + 1].isspace():
            return j + 1
        i = j
    return 0


def _pieces(text: str) -> list[str]:
    """``text`` cut after newlines (see :func:`_last_cut`) into pieces of about
    :data:`BATCH_CHARS` characters (longer where a line is)."""
    out, start = [], 0
    while len(text) - start > BATCH_CHARS:
        cut = _last_cut(text[start : start + BATCH_CHARS])
        if cut == 0:  # no line end in the window: take up to the next one
            nxt = _next_cut(text, start + BATCH_CHARS)
            if nxt < 0:
                break
            cut = nxt - start
        out.append(text[start : start + cut])
        start += cut
    if start < len(text):
        out.append(text[start:])
    return out


def _next_cut(text: str, i: int) -> int:
    """The first cut at or after ``i`` (-1: none)."""
    while True:
        j = text.find("\n", i)
        if j < 0 or j + 1 >= len(text):
            return -1
        if not text[j + 1].isspace():
            return j + 1
        i = j + 1

"""A run's vocabulary, of either kind: characters (:class:`~domaingpt.data.vocab.Vocab`)
or a subword tokenizer (:class:`~domaingpt.data.subword.SubwordVocab`).

Both give ids (``encode``, ``encode_stream``, ``decode``), a size, a fingerprint, the
characters each id covers (``Encoded.lengths``, ``None`` for one per id) and a JSON
record; a checkpoint and ``vocab.json`` hold that record and :func:`vocab_from_json`
reads either back.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, TypeAlias

from domaingpt.data.subword import KIND as SUBWORD
from domaingpt.data.subword import SubwordVocab
from domaingpt.data.vocab import Vocab
from domaingpt.errors import DomainGPTError

#: A vocabulary of either kind.
AnyVocab: TypeAlias = Vocab | SubwordVocab


def vocab_from_json(data: Any) -> AnyVocab:
    """The vocabulary a record (``vocab.json``, a checkpoint's ``vocab``) describes."""
    if not isinstance(data, dict):
        raise DomainGPTError("malformed vocabulary record: not a JSON object")
    if data.get("kind") == SUBWORD:
        return _subword(data.get("tokenizer"), data.get("fingerprint"))
    return Vocab.from_json(data)


@lru_cache(maxsize=8)
def _subword(tokenizer: Any, fingerprint: Any) -> SubwordVocab:
    """A tokenizer is parsed once per process, not once per checkpoint that holds it."""
    return SubwordVocab.from_json({"tokenizer": tokenizer, "fingerprint": fingerprint})


def is_subword(vocab: AnyVocab) -> bool:
    return vocab.kind == SUBWORD

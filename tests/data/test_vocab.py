from __future__ import annotations

import numpy as np
import pytest

from domaingpt.data.corpus import resolve_corpus
from domaingpt.data.vocab import UNK, UNK_ID, Vocab
from domaingpt.errors import DomainGPTError


@pytest.fixture(scope="module")
def texts(corpora):
    return {n: corpora.path(n).read_text() for n in corpora.names}


def test_study_vocab_is_union_of_corpora_plus_unk(texts):
    vocab = Vocab.from_texts(texts.values())
    union = set().union(*(set(t) for t in texts.values()))
    assert vocab.size == len(union) + 1
    assert vocab.token(UNK_ID) == UNK
    assert set(vocab.chars) == union
    # every corpus encodes without a single <unk>
    for text in texts.values():
        assert vocab.encode(text[:200_000]).n_unk == 0
    assert vocab.dtype == np.uint16


def test_shakespeare_alone_has_65_chars(data_dir):
    text = resolve_corpus("shakespeare", data_dir).read_text()  # the real Tiny Shakespeare
    assert Vocab.from_texts([text]).size == 66


def test_encode_decode_roundtrip_and_unknowns():
    vocab = Vocab.from_texts(["hello world\n"])
    enc = vocab.encode("hello, world€")
    assert enc.n_unk == 2 and set(enc.unknown_chars) == {",", "€"}
    assert vocab.decode(enc.ids) == f"hello{UNK} world{UNK}"
    assert vocab.decode(vocab.encode("world\n").ids) == "world\n"
    assert [vocab.id_of(c) for c in " dehlorw"] == list(range(2, 10))
    assert vocab.id_of("z") == UNK_ID


def test_json_roundtrip_and_tamper_detection():
    vocab = Vocab.from_texts(["abc\n万"])
    again = Vocab.from_json(vocab.to_json())
    assert again == vocab and again.fingerprint == vocab.fingerprint
    bad = vocab.to_json() | {"chars": "\nabd万"}
    with pytest.raises(DomainGPTError, match="fingerprint"):
        Vocab.from_json(bad)


def test_vectorised_encode_matches_per_char_lookup(texts):
    vocab = Vocab.from_texts([texts["wikipedia"]])
    sample = texts["wikipedia"][:5000] + "\U0001f600"
    fast = vocab.encode(sample).ids.tolist()
    assert fast == [vocab.id_of(c) for c in sample]

"""Validation splits shared by models of several vocabularies: every model is scored on
the same characters of a corpus."""

from __future__ import annotations

import pytest

from domaingpt.context.splits import CorpusCache
from domaingpt.data.encoding import encode_corpus
from domaingpt.data.vocab import Vocab


def test_models_of_two_vocabularies_score_the_same_characters(corpora) -> None:
    pytest.importorskip("tokenizers")
    from tests.data.test_subword import train_bpe

    from domaingpt.data.subword import SubwordVocab

    corpus = corpora.resolve("wikipedia")
    text = corpus.read_text()
    chars, bpe = Vocab.from_texts([text]), SubwordVocab(train_bpe(corpora.paths))
    own = CorpusCache()  # each vocabulary's own split: the last tenth of its ids
    assert own.split(corpus, chars, 0.1, 8).val.shape[0] == len(text) - int(len(text) * 0.9)
    one = CorpusCache()
    one.share_validation([corpus], [(chars, 0.1), (chars, 0.1)])
    assert one.val_from == {}  # one vocabulary: nothing changes
    enc = encode_corpus(corpus, bpe)
    bpe_start = int(enc.lengths[: int(len(enc.ids) * 0.9)].sum())
    start = max(int(len(text) * 0.9), bpe_start)
    shared = CorpusCache()
    shared.share_validation([corpus], [(chars, 0.1), (bpe, 0.1)])
    assert shared.val_from == {"wikipedia": start}
    c, b = shared.split(corpus, chars, 0.1, 8), shared.split(corpus, bpe, 0.1, 8)
    assert chars.decode(c.val.tolist()) == text[start:]
    covered = int(b.val_lengths.sum())  # from the first BPE token starting at or after it
    assert bpe.decode(b.val.tolist()) == text[len(text) - covered :]
    assert 0 <= (len(text) - start) - covered < 16

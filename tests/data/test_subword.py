"""A subword vocabulary: a BPE tokenizer trained with ``tokenizers`` on the corpora.

Ids and character spans as the tokenizer gives them, a stream encoded in pieces as the
whole text, refusal of a tokenizer that changes characters, and bits per character
computed by hand the same way for a subword and a character model.
"""

from __future__ import annotations

import itertools
import json
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from domaingpt.data.encoding import encode_corpus, window_mask, window_starts
from domaingpt.data.subword import SubwordVocab
from domaingpt.data.tokenizer import is_subword, vocab_from_json
from domaingpt.data.vocab import Vocab
from domaingpt.errors import DomainGPTError
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.scoring import score_windows

tk = pytest.importorskip("tokenizers")


def train_bpe(paths, size: int = 400, normalizer=None) -> str:
    """A byte-level BPE tokenizer trained on ``paths``, as ``tokenizer.json`` text."""
    tok = tk.Tokenizer(tk.models.BPE())
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=size,
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(p) for p in paths], trainer)
    return tok.to_str()


@pytest.fixture(scope="module")
def bpe(corpora) -> SubwordVocab:
    return SubwordVocab(train_bpe(corpora.paths))


def test_ids_and_spans_cover_the_text(bpe: SubwordVocab, corpora) -> None:
    text = corpora.path("wikipedia").read_text()[:4000] + " 🙂 ok"
    enc = bpe.encode(text)
    assert enc.lengths is not None and len(enc.lengths) == len(enc.ids)
    assert int(enc.lengths.sum()) == len(text)
    assert bpe.decode(enc.ids) == text
    assert len(enc.ids) < 0.7 * len(text)  # merges: fewer tokens than characters
    # each token's span is exactly its text, where it covers whole characters
    ends = np.cumsum(enc.lengths)
    for i in range(len(enc.ids)):
        if enc.lengths[i] and "\ufffd" not in bpe.token(int(enc.ids[i])):
            assert text[ends[i] - enc.lengths[i] : ends[i]] == bpe.token(int(enc.ids[i]))
    # the emoji is byte-level pieces: the token that completes it covers it
    emoji = text.index("🙂")
    k = int(np.searchsorted(ends, emoji, side="right"))
    assert bpe.decode(enc.ids[: k + 1]) == text[: emoji + 1]
    assert not bpe.decode(enc.ids[:k]).endswith("🙂")
    assert "\ufffd" in bpe.token(int(enc.ids[k]))  # a piece, not the whole character


def test_stream_encodes_as_the_whole_text(bpe: SubwordVocab, corpora) -> None:
    text = corpora.path("shakespeare").read_text()
    whole = bpe.encode(text)
    cuts = [0, 7, 1000, 1001, 5003, len(text)]
    parts = list(bpe.encode_stream(text[a:b] for a, b in itertools.pairwise(cuts)))
    assert np.array_equal(np.concatenate([p.ids for p in parts]), whole.ids)
    assert np.array_equal(np.concatenate([p.lengths for p in parts]), whole.lengths)


def test_record_pickle_and_fingerprint(bpe: SubwordVocab) -> None:
    back = vocab_from_json(bpe.to_json())
    assert is_subword(back) and back == bpe and back.size == 400
    assert pickle.loads(pickle.dumps(bpe)) == bpe
    # the same tokenizer written with its keys in another order is the same vocabulary
    data = json.loads(bpe.json)
    reordered = json.dumps(dict(reversed(list(data.items()))))
    assert SubwordVocab(reordered).fingerprint == bpe.fingerprint
    altered = {**bpe.to_json(), "fingerprint": "0" * 64}
    with pytest.raises(DomainGPTError, match="fingerprint"):
        vocab_from_json(altered)
    assert not is_subword(vocab_from_json(Vocab(("a", "b")).to_json()))


def test_a_tokenizer_that_changes_characters_is_refused(corpora, tmp_path) -> None:
    lower = SubwordVocab(train_bpe(corpora.paths, normalizer=tk.normalizers.Lowercase()))
    with pytest.raises(DomainGPTError) as e:
        lower.check_text(corpora.path("shakespeare").read_text(), "corpus 'shakespeare'")
    msg = str(e.value)
    assert "\n" not in msg and "corpus 'shakespeare'" in msg and "decodes to" in msg
    # encoding the corpus refuses it too, and leaves no cache entry for it
    with pytest.raises(DomainGPTError, match="cannot read"):
        encode_corpus(corpora.resolve("shakespeare"), lower)


def test_the_encoded_corpus_keeps_each_tokens_characters(bpe: SubwordVocab, corpora) -> None:
    corpus = corpora.resolve("math")
    enc = encode_corpus(corpus, bpe)
    again = encode_corpus(corpus, bpe)  # from the cache: the same ids and lengths
    assert enc.lengths is not None and again.lengths is not None
    assert int(np.sum(enc.lengths)) == len(corpus.read_text())
    assert np.array_equal(np.asarray(again.ids), np.asarray(enc.ids))
    assert np.array_equal(np.asarray(again.lengths), np.asarray(enc.lengths))
    train, val = enc.split_lengths(0.1)
    assert len(train) + len(val) == len(enc.ids)


def _by_hand(model: GPT, ids: np.ndarray, lengths: np.ndarray) -> float:
    """Bits per character from the model's forward pass, window by window, in plain torch:
    each target once (the disjoint windows' mask), its loss over its characters."""
    T = model.config.block_size
    starts = window_starts(len(ids), T)
    mask = window_mask(starts, T)
    nll = chars = 0.0
    with torch.no_grad():
        for s, m in zip(starts, mask, strict=True):
            x = torch.from_numpy(np.asarray(ids[s : s + T + 1], dtype=np.int64))
            logits, _ = model(x[None, :-1])
            losses = F.cross_entropy(logits[0], x[1:], reduction="none").double().numpy()
            nll += float((losses * m).sum())
            chars += float((lengths[s + 1 : s + T + 1] * m).sum())
    return nll / chars / math.log(2.0)


@pytest.mark.parametrize("kind", ["subword", "char"])
def test_bits_per_character_by_hand(kind: str, bpe: SubwordVocab, corpora) -> None:
    text = corpora.path("wikipedia").read_text()[:3000]
    vocab = bpe if kind == "subword" else Vocab.from_texts([text])
    enc = vocab.encode(text)
    lengths = enc.lengths if enc.lengths is not None else np.ones(len(enc.ids), np.int64)
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=vocab.size)
    model = GPT(cfg).eval()
    scores = score_windows(model, enc.ids, engine="torch", lengths=enc.lengths)
    assert scores.bits_per_char == pytest.approx(_by_hand(model, enc.ids, lengths), rel=1e-6)
    assert scores.n_chars == len(text) - int(lengths[0])  # every character but the first
    if kind == "char":  # one character per id: bits per character is the loss in bits
        assert scores.bits_per_char == pytest.approx(scores.mean_loss / math.log(2.0))
    else:
        assert scores.n_chars > 1.4 * scores.n_scored

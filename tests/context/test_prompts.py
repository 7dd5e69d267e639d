"""Prompt sets: deterministic validation windows with their true next character, user
prompts (escapes, last character = target), <unk> accounting, padding, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from domaingpt.context.prompts import (
    PromptSet,
    build_prompt_set,
    decode_escapes,
    domain_of,
    read_prompt_file,
    user_prompt,
    validation_prompt_sets,
    validation_prompts,
)
from domaingpt.context.rundir import ModelEntry, RunDir
from domaingpt.context.vocabulary import shared_vocab
from domaingpt.data.corpus import resolve_corpus
from domaingpt.data.encoding import encode_corpus
from domaingpt.data.vocab import UNK_ID, Vocab
from domaingpt.errors import DomainGPTError

VOCAB = Vocab.from_texts(["abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\n\t.,;:!?'\\$"])


def test_escapes_decode_only_n_t_r_and_backslash():
    assert decode_escapes(r"a\nb\tc\\d") == "a\nb\tc\\d"
    # LaTeX survives: unknown escapes are kept as typed.
    assert decode_escapes(r"\frac{1}{2} \alpha") == r"\frac{1}{2} \alpha"
    assert decode_escapes("trailing\\") == "trailing\\"


def test_prompt_file_lines_escapes_and_blank_lines(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("To be or not\\nto be\n\n   \nhello\n", encoding="utf-8")
    assert read_prompt_file(f) == ["To be or not\nto be", "hello"]
    (tmp_path / "blank.txt").write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DomainGPTError, match="no prompt"):
        read_prompt_file(tmp_path / "blank.txt")
    with pytest.raises(DomainGPTError, match="does not exist"):
        read_prompt_file(tmp_path / "missing.txt")


def test_user_prompt_last_character_is_the_target():
    p = user_prompt(VOCAB, "To be", prompt_id=7, max_length=64)
    assert (p.text, p.target, p.corpus, p.start, p.prompt_id) == ("To b", "e", "user", -1, 7)
    assert VOCAB.decode(p.ids) == "To b" and VOCAB.token(p.target_id) == "e"
    assert p.n_unk == 0
    assert list(p.next_ids) == [VOCAB.id_of(c) for c in "o be"]


def test_user_prompt_unknown_and_control_characters_become_unk():
    p = user_prompt(VOCAB, "a\x07b€c", prompt_id=0, max_length=64)
    assert p.n_unk == 2  # the bell (control) and the euro sign (not in the vocabulary)
    assert list(p.ids) == [VOCAB.id_of("a"), UNK_ID, VOCAB.id_of("b"), UNK_ID]
    assert p.text == "a\x07b€"  # the text is kept as typed


def test_user_prompt_cropped_to_block_size_and_errors():
    p = user_prompt(VOCAB, "abcdefghij", prompt_id=0, max_length=4)
    assert p.text == "fghi" and p.target == "j" and len(p.ids) == 4
    with pytest.raises(DomainGPTError, match="empty"):
        user_prompt(VOCAB, "", 0, 8)
    with pytest.raises(DomainGPTError, match="one character"):
        user_prompt(VOCAB, "a", 0, 8)


def test_domain_is_derived_from_the_corpora():
    assert domain_of("shakespeare", "shakespeare") == "in"
    assert domain_of("math", "shakespeare") == "out"
    assert domain_of("user", "shakespeare") == "user"


def test_validation_prompts_come_from_the_val_split(corpora):
    corpus = corpora.resolve("shakespeare")
    text = corpus.read_text()
    vocab = Vocab.from_texts([text])
    prompts, freq = validation_prompts(corpus, vocab, per_corpus=16, length=40, val_fraction=0.1)
    again, _ = validation_prompts(corpus, vocab, per_corpus=16, length=40, val_fraction=0.1)
    assert [p.text for p in prompts] == [p.text for p in again]  # deterministic
    assert len(prompts) == 16
    n_train = len(encode_corpus(corpus, vocab).split(0.1)[0])
    starts = [p.start for p in prompts]
    assert starts[0] == 0 and starts == sorted(starts)
    for p in prompts:
        at = n_train + p.start
        assert p.text == text[at : at + 40] and p.target == text[at + 40]
        assert list(p.ids) == [vocab.id_of(c) for c in p.text]
        assert vocab.token(p.target_id) == p.target and p.n_unk == 0
    # the last window ends at the end of the split, with its target the last character
    assert n_train + starts[-1] + 41 == len(text)
    assert freq.sum() == pytest.approx(1.0)
    assert freq[vocab.id_of(" ")] == pytest.approx(text.count(" ") / len(text))


def test_build_prompt_set_clips_length_and_adds_user_prompts(corpora, tmp_path):
    run = RunDir(tmp_path / "run")
    verse = corpora.resolve("shakespeare")  # found where the model's record says it is
    model = ModelEntry(
        "shakespeare", tmp_path, "shakespeare", verse.sha256, 0.1, 16, corpus_path=str(verse.path)
    )
    vocab = Vocab.from_texts([verse.read_text()])
    notes: list[str] = []
    ps = build_prompt_set(
        run,
        [model],
        vocab,
        per_corpus=4,
        length=64,
        prompts=["ROMEO:\\nO", "x" * 40],
        log=notes.append,
    )
    assert any("block_size 16" in n for n in notes)
    assert [p.corpus for p in ps.prompts] == ["shakespeare"] * 4 + ["user", "user"]
    assert [p.length for p in ps.prompts] == [16] * 4 + [7, 16]
    assert ps.prompts[4].text == "ROMEO:\n" and ps.prompts[4].target == "O"
    assert [p.prompt_id for p in ps.prompts] == list(range(6))
    with pytest.raises(DomainGPTError, match="empty"):
        build_prompt_set(run, [model], vocab, per_corpus=0, prompts=[""], log=notes.append)


def test_tensors_right_pad_and_mark_padding():
    ps = PromptSet([user_prompt(VOCAB, "abcd", 0, 8), user_prompt(VOCAB, "xy", 1, 8)])
    ids, lengths, targets, nxt = ps.tensors()
    assert ids.shape == (2, 3) and lengths.tolist() == [3, 1]
    assert targets.tolist() == [VOCAB.id_of("d"), VOCAB.id_of("y")]
    assert nxt[1].tolist() == [VOCAB.id_of("y"), -1, -1]
    assert ids[1, 1:].tolist() == [UNK_ID, UNK_ID]
    frame = ps.frame()
    assert list(frame["target"]) == ["d", "y"] and list(frame["length"]) == [3, 1]
    assert np.array_equal(ps.prompts[0].next_ids, [VOCAB.id_of(c) for c in "bcd"])


def test_prompt_file_is_used(tmp_path):
    f = Path(tmp_path / "prompts.txt")
    f.write_text("hello world\n", encoding="utf-8")
    model = ModelEntry("m", tmp_path, "m", None, 0.1, block_size=32)
    ps = build_prompt_set(RunDir(tmp_path), [model], VOCAB, per_corpus=0, prompt_file=str(f))
    assert [(p.text, p.target) for p in ps.prompts] == [("hello worl", "d")]


def test_default_corpora_are_the_models_and_the_runs(data_dir, tmp_path):
    run = RunDir(tmp_path / "run")
    corpora = [resolve_corpus(n, data_dir) for n in ("shakespeare", "math", "wikipedia")]
    vocab = shared_vocab(run, corpora, print)  # records the three corpora in vocab.json
    model = ModelEntry("shakespeare", tmp_path, "shakespeare", None, 0.1, block_size=32)
    ps = build_prompt_set(run, [model], vocab, per_corpus=2, length=8, data_dir=data_dir)
    assert ps.corpora == ["shakespeare", "math", "wikipedia"]
    assert set(ps.frequencies) == {"shakespeare", "math", "wikipedia"}


def test_two_vocabularies_read_the_same_characters(corpora, tmp_path):
    """A character and a subword vocabulary: the same contexts, each starting and ending
    where a BPE token does, inside both validation splits; each its own next token."""
    pytest.importorskip("tokenizers")
    from tests.data.test_subword import train_bpe

    from domaingpt.data.subword import SubwordVocab

    corpus = corpora.resolve("wikipedia")
    text = corpus.read_text()
    chars, bpe = Vocab.from_texts([text]), SubwordVocab(train_bpe(corpora.paths))
    (by_char, _), (by_token, freq) = validation_prompt_sets(
        corpus, [chars, bpe], per_corpus=12, length=48, val_fraction=0.1, max_tokens=48
    )
    assert len(by_char) == len(by_token) == 12 and freq.sum() == pytest.approx(1.0)
    assert sum(t.length for t in by_token) < sum(len(t.text) for t in by_token)
    enc = encode_corpus(corpus, bpe)
    train_tokens = len(enc.split(0.1)[0])
    starts = np.concatenate([[0], np.cumsum(enc.lengths)])  # each token's first character
    first = max(len(encode_corpus(corpus, chars).split(0.1)[0]), int(starts[train_tokens]))
    boundaries = set(starts.tolist())
    for c, t in zip(by_char, by_token, strict=True):
        at = len(text) - len(encode_corpus(corpus, chars).split(0.1)[1]) + c.start
        end = at + len(c.text)
        assert t.text == c.text == text[at:end] and 0 < len(c.text) <= 48
        assert at >= first and at in boundaries and end in boundaries
        assert at == starts[train_tokens + t.start]  # the token the subword prompt starts at
        assert c.target == text[end] and text.startswith(t.target, end) and t.target
        assert int(t.lengths.sum()) == len(t.text) and t.length <= 48  # max_tokens
        assert bpe.decode(t.ids) == t.text and list(c.ids) == [chars.id_of(x) for x in c.text]
        assert t.target_id == enc.ids[train_tokens + t.start + t.length]

    # A character of four bytes the tokenizer never merged is four byte-level pieces:
    # a context of 8 characters would be 20 tokens; cut back to fit 8.
    emoji = tmp_path / "emoji.txt"
    emoji.write_text("ab \U0001f642\U0001f642 cd\n" * 400)
    (by_char, _), (by_token, _) = validation_prompt_sets(
        resolve_corpus(str(emoji)), [chars, bpe], per_corpus=6, length=8, val_fraction=0.1,
        max_tokens=8,
    )  # fmt: skip
    assert all(t.length <= 8 for t in by_token) and all(len(c.text) <= 8 for c in by_char)
    assert any(len(t.text) < 8 for t in by_token)  # cut back for the pieces
    assert [c.text for c in by_char] == [t.text for t in by_token]

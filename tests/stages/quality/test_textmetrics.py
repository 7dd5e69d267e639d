"""Text measures on strings with known answers, and reference profiles of the real corpora."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from domaingpt.data.charclass import CLASSES
from domaingpt.stages.quality.textmetrics import (
    CorpusProfile,
    build_profile,
    class_distribution,
    distinct_n,
    heading_counts,
    js_divergence,
    layout,
    line_start_slices,
    longest_repeat,
    nearest_corpus,
    repetitiveness,
    sample_measures,
    style_distances,
    unigram_distribution,
    word_formation,
    words,
    zlib_ratio,
)

CORPORA = ("shakespeare", "math", "wikipedia")


def test_words_are_case_folded_letter_runs() -> None:
    assert words("Know't, THE cat's 3rd \\frac12 café") == [
        "know",
        "t",
        "the",
        "cat",
        "s",
        "rd",
        "frac",
        "café",
    ]
    assert words("123 -- !!") == []


def test_words_of_the_corpus_score_one_and_unknown_words_zero() -> None:
    corpus = "First Citizen:\nBefore we proceed any further, hear me speak."
    lexicon = frozenset(words(corpus))
    wf = word_formation("speak, FURTHER! before any citizen", lexicon)
    assert wf["word_known"] == 1.0
    assert wf["long_word_known"] == 1.0
    assert wf["n_words"] == 5 and wf["n_long_words"] == 4
    assert wf["mean_word_len"] == pytest.approx((5 + 7 + 6 + 3 + 7) / 5)
    mixed = word_formation("speak zqxv of further", lexicon)
    assert mixed["word_known"] == pytest.approx(2 / 4)  # "of" is not in this corpus
    assert mixed["long_word_known"] == pytest.approx(2 / 3)
    empty = word_formation("12 34 !!", lexicon)
    assert empty["n_words"] == 0 and math.isnan(empty["word_known"])


def test_speaker_headings() -> None:
    text = "First Citizen:\nBefore we proceed\n\nAll:\nSpeak, speak.\nKING RICHARD III:\n"
    assert heading_counts(text) == (3, 5)
    assert layout(text)["heading_share"] == pytest.approx(3 / 5)
    not_headings = "Nay, let them follow:\nbrave Titus:\nThis is a very long line here:\nx = 2:"
    assert heading_counts(not_headings) == (0, 4)


def test_layout_shares() -> None:
    out = layout("ab c\nd e\n")
    assert out["space_share"] == pytest.approx(2 / 9)
    assert out["newline_share"] == pytest.approx(2 / 9)
    assert all(math.isnan(v) for v in layout("").values())


def test_distinct_n_exact_values() -> None:
    assert distinct_n("abab", 2) == pytest.approx(2 / 3)  # ab, ba, ab
    assert distinct_n("abcdef", 2) == 1.0
    assert distinct_n(["a", "b", "a", "b"], 2) == pytest.approx(2 / 3)
    assert math.isnan(distinct_n("abc", 4))


def _brute_longest_repeat(text: str) -> int:
    best = 0
    for i in range(len(text)):
        for j in range(i + 1, len(text)):
            k = 0
            while j + k < len(text) and text[i + k] == text[j + k]:
                k += 1
            best = max(best, k)
    return best


def test_longest_repeat_known_and_brute_force() -> None:
    assert longest_repeat("banana") == 3  # "ana", overlapping occurrences
    assert longest_repeat("aaaa") == 3
    assert longest_repeat("abc") == 0
    assert longest_repeat("") == 0
    rng = random.Random(0)
    for _ in range(200):
        text = "".join(rng.choice("ab c") for _ in range(rng.randint(0, 40)))
        assert longest_repeat(text) == _brute_longest_repeat(text), text


def test_repeated_text_is_repetitive_and_varied_text_is_not(corpora) -> None:
    looped = "the king is dead. " * 28  # 504 characters
    real = corpora.path("shakespeare").read_text()[10_000:10_504]
    rep, ref = repetitiveness(looped), repetitiveness(real)
    assert rep["distinct_char_4"] == pytest.approx(18 / 501)  # 18 distinct 4-grams in a loop
    assert rep["distinct_word_2"] < 0.1 < 0.9 < ref["distinct_word_2"]
    assert rep["longest_repeat"] == len(looped) - 18
    assert ref["longest_repeat"] < 40
    assert rep["zlib_ratio"] < 0.1 < 0.5 < ref["zlib_ratio"]
    assert zlib_ratio("") != zlib_ratio("")  # NaN: nothing to compress


def test_distributions_and_js_divergence() -> None:
    cls = class_distribution("ab1 \n")
    assert list(cls) == list(CLASSES) and sum(cls.values()) == pytest.approx(1.0)
    assert cls["vowel"] == cls["consonant"] == cls["digit"] == pytest.approx(0.2)
    assert unigram_distribution("aab") == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 3)}
    p = {"a": 1.0}
    q = {"a": 0.5, "b": 0.5}
    # m = (0.75, 0.25): JS = ½·log2(1/0.75) + ½·(½·log2(0.5/0.75) + ½·log2(0.5/0.25))
    expected = 0.5 * math.log2(4 / 3) + 0.5 * (0.5 * math.log2(2 / 3) + 0.5)
    assert js_divergence(p, q) == pytest.approx(expected)
    assert js_divergence(q, p) == pytest.approx(expected)
    assert js_divergence(q, {"b": 5, "a": 5}) == 0.0  # not normalised: still the same
    assert js_divergence({"a": 1}, {"b": 1}) == pytest.approx(1.0)
    assert math.isnan(js_divergence({}, q))


def test_line_start_slices() -> None:
    text = "".join(f"line {i:03d}\n" for i in range(300))  # 9 characters per line
    slices = line_start_slices(text, 50, 10)
    assert len(slices) == 10
    assert all(len(s) == 50 and s.startswith("line ") for s in slices)
    assert slices[0] == text[:50]
    assert line_start_slices("short", 50, 3) == ["short"]


def _profiles(folder: Path) -> dict[str, CorpusProfile]:
    return {
        name: build_profile(name, (folder / f"{name}.txt").read_text(), n_slices=12)
        for name in CORPORA
    }


@pytest.fixture(scope="module")
def profiles(corpora) -> dict[str, CorpusProfile]:
    return _profiles(corpora.dir)


def test_profile_values_of_the_real_corpora(data_dir) -> None:
    profiles = _profiles(data_dir)
    sh = profiles["shakespeare"]
    assert "citizen" in sh.lexicon and "romeo" in sh.lexicon
    # ~24 % of Shakespeare's non-empty lines are speaker headings; none in the others
    assert 0.15 < sh.corpus_values["heading_share"] < 0.3
    assert profiles["wikipedia"].corpus_values["heading_share"] == 0.0
    assert profiles["math"].class_dist["math_symbol"] > 5 * sh.class_dist["math_symbol"]
    for p in profiles.values():
        # held-out text scored against the train split's words: mostly, not all, known
        assert 0.8 < p.slice_mean["long_word_known"] < 1.0
        assert p.slice_mean["n_chars"] == 500
        # the noise floor of the style distance on 500 characters is small
        assert p.slice_mean["js_class"] < 0.06
    assert CorpusProfile.from_json(sh.to_json()) == sh


@pytest.mark.parametrize("corpus", CORPORA)
def test_a_slice_of_a_corpus_is_nearest_to_that_corpus(profiles, corpora, corpus) -> None:
    text = corpora.path(corpus).read_text()
    held_out = text[int(len(text) * 0.9) :]
    long_slice = line_start_slices(held_out, 5000, 1)[0]
    assert nearest_corpus(style_distances(long_slice, profiles.values())) == corpus
    # and most 500-character slices, like a sample, are nearest to it too
    short = line_start_slices(held_out, 500, 15)
    nearest = [nearest_corpus(style_distances(s, profiles.values())) for s in short]
    # (slices start at lines: the encyclopedia's long lines give fewer distinct ones)
    assert len(nearest) >= 5 and nearest.count(corpus) >= 2 / 3 * len(nearest), nearest


def test_sample_measures_of_corpus_text_match_its_profile(profiles, corpora) -> None:
    sh = profiles["shakespeare"]
    text = corpora.path("shakespeare").read_text()
    text = text[: text.rindex("\n", 0, 500)]  # whole lines (no cut word) of the train split
    m = sample_measures(text, sh)
    assert m["word_known"] == 1.0 and m["long_word_known"] == 1.0
    assert m["js_unigram"] < 0.1
    assert sum(m[f"class_{c}"] for c in CLASSES) == pytest.approx(1.0)

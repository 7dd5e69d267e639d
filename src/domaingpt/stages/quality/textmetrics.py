"""What a sample of text looks like, as numbers: spelling, layout, repetitiveness, style.

The study judged its samples by eye ("spaces introduced around iteration 100", "some
meaningful words", "no repetitive text", "picked up mathematical symbols"). Every
function here turns one of those judgements into a number computed from a string, so
the judgement can be checked along training (see :mod:`domaingpt.stages.quality`).

Definitions used throughout:

*word*
    A maximal run of letters (Unicode letters: ``[^\\W\\d_]+``), case-folded. Digits,
    apostrophes, hyphens and LaTeX backslashes split words: ``know't`` is ``know`` +
    ``t``, ``\\frac12`` is ``frac``. A *long* word has at least :data:`LONG_WORD`
    letters; short words (``a``, ``of``, ``the``) are real far too easily by chance.
*speaker heading*
    A line that is a capitalised name of at most four words ending with ``:`` and nothing
    else (``First Citizen:``, ``KING RICHARD III:``), see :data:`HEADING_RE`; its share
    is over non-empty lines.
*distinct-n*
    Distinct n-grams / all n-grams (overlapping), of characters or of words; 1.0 means no
    n-gram occurs twice, a text repeating itself scores low.
*longest repeat*
    Length in characters of the longest substring that occurs at least twice
    (occurrences may overlap: ``"aaaa"`` -> 3).
*zlib ratio*
    ``len(zlib.compress(utf8, 9)) / len(utf8)``: compressed bytes per byte. Lower is more
    compressible, i.e. more repetitive. On texts of a few hundred characters zlib's
    header dominates, so compare it only with the same measure on equally long text.
*style distance*
    Jensen-Shannon divergence (base 2, in [0, 1]) between two distributions: of the
    character classes of :mod:`domaingpt.charclass`, or of single characters.

A :class:`CorpusProfile` holds the same measures for a reference corpus: its word list
and distributions from the training split (what a model learned from), and every
sample-level measure averaged over equally long slices of the held-out split, so a
500-character sample is compared with 500-character pieces of real text.
"""

from __future__ import annotations

import math
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from domaingpt.core.statistics import js_divergence
from domaingpt.data.charclass import CLASSES, char_class

PROFILE_FORMAT = "domaingpt-textprofile/1"
WORD_RE = re.compile(r"[^\W\d_]+")
HEADING_RE = re.compile(r"^[A-Z][A-Za-z]*(?: [A-Za-z]+){0,3}:$")
DISTINCT_N: tuple[int, ...] = (2, 4, 8)
LONG_WORD = 4

# Sample-level measures with the direction in which a text is more repetitive.
REPETITION_METRICS: dict[str, str] = {
    "distinct_char_4": "low",
    "zlib_ratio": "low",
    "longest_repeat": "high",
}


# --- single measures -------------------------------------------------------------------


def words(text: str) -> list[str]:
    """The words of ``text``: maximal letter runs, case-folded (see the module doc)."""
    return [w.casefold() for w in WORD_RE.findall(text)]


def word_formation(text: str, lexicon: frozenset[str] | set[str]) -> dict[str, float]:
    """How many generated words are real words of a corpus (its ``lexicon``).

    ``word_known``: share of all words found in the lexicon; ``long_word_known``: the same
    for words of at least :data:`LONG_WORD` letters; ``mean_word_len`` in letters. NaN
    where there is no word to count.
    """
    ws = words(text)
    long = [w for w in ws if len(w) >= LONG_WORD]
    return {
        "n_words": float(len(ws)),
        "word_known": _share(sum(w in lexicon for w in ws), len(ws)),
        "n_long_words": float(len(long)),
        "long_word_known": _share(sum(w in lexicon for w in long), len(long)),
        "mean_word_len": float(np.mean([len(w) for w in ws])) if ws else math.nan,
    }


def heading_counts(text: str) -> tuple[int, int]:
    """(speaker-heading lines, non-empty lines) of ``text``."""
    lines = [line.strip() for line in text.split("\n")]
    nonempty = [line for line in lines if line]
    return sum(bool(HEADING_RE.match(line)) for line in nonempty), len(nonempty)


def layout(text: str) -> dict[str, float]:
    """Share of spaces and of newlines among characters; share of speaker-heading lines."""
    n = len(text)
    headings, lines = heading_counts(text)
    return {
        "space_share": _share(text.count(" "), n),
        "newline_share": _share(text.count("\n"), n),
        "heading_share": _share(headings, lines),
    }


def distinct_n(units: list[str] | str, n: int) -> float:
    """Distinct n-grams / all n-grams of a sequence (characters of a str, or words)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    total = len(units) - n + 1
    if total < 1:
        return math.nan
    if isinstance(units, str):
        grams = {units[i : i + n] for i in range(total)}
    else:
        grams = {tuple(units[i : i + n]) for i in range(total)}
    return len(grams) / total


def longest_repeat(text: str) -> int:
    """Length of the longest substring occurring at least twice (overlaps allowed).

    Binary search on the length: a repeat of length L contains one of length L-1, so
    "has a repeat of length L" is monotone; each test is one pass over the substrings of
    length L. O(n·L·log n) character work, milliseconds for a few thousand characters.
    """
    lo, hi = 0, max(len(text) - 1, 0)  # lo repeats; no repeat can be longer than hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _has_repeat(text, mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _has_repeat(text: str, length: int) -> bool:
    seen: set[str] = set()
    for i in range(len(text) - length + 1):
        piece = text[i : i + length]
        if piece in seen:
            return True
        seen.add(piece)
    return False


def zlib_ratio(text: str) -> float:
    """Compressed bytes per UTF-8 byte (zlib level 9); lower is more repetitive."""
    raw = text.encode("utf-8")
    return len(zlib.compress(raw, 9)) / len(raw) if raw else math.nan


def repetitiveness(text: str) -> dict[str, float]:
    """distinct-n of characters and words for n in :data:`DISTINCT_N`, longest repeat,
    zlib ratio."""
    ws = words(text)
    out: dict[str, float] = {}
    for n in DISTINCT_N:
        out[f"distinct_char_{n}"] = distinct_n(text, n)
    for n in DISTINCT_N:
        out[f"distinct_word_{n}"] = distinct_n(ws, n)
    out["longest_repeat"] = float(longest_repeat(text))
    out["zlib_ratio"] = zlib_ratio(text)
    return out


def unigram_distribution(text: str | Mapping[str, int]) -> dict[str, float]:
    """Share of each character (from a text or from character counts)."""
    counts = Counter(text) if isinstance(text, str) else text
    total = sum(counts.values())
    return {c: k / total for c, k in counts.items() if k} if total else {}


def class_distribution(text: str | Mapping[str, int]) -> dict[str, float]:
    """Share of each character class of :data:`domaingpt.charclass.CLASSES` (all present)."""
    counts = Counter(text) if isinstance(text, str) else text
    by_class = dict.fromkeys(CLASSES, 0)
    for ch, k in counts.items():
        by_class[char_class(ch)] += k
    total = sum(by_class.values())
    return {c: (k / total if total else 0.0) for c, k in by_class.items()}


def _share(k: int | float, n: int | float) -> float:
    return float(k) / n if n else math.nan


# --- a reference corpus ----------------------------------------------------------------


@dataclass(frozen=True)
class CorpusProfile:
    """The reference a sample is compared with (see the module doc).

    ``corpus_values``: word length and layout shares of the whole training split;
    ``slice_mean`` / ``slice_std``: every sample-level measure (:func:`sample_measures`
    against this very profile, plus style self-distances) over ``n_slices`` held-out
    slices of ``slice_chars`` characters, each starting at a line start like a sample
    prompted with a newline.
    """

    corpus: str
    sha256: str
    val_fraction: float
    slice_chars: int
    n_slices: int
    lexicon: frozenset[str]
    class_dist: dict[str, float]
    unigram: dict[str, float]
    corpus_values: dict[str, float]
    slice_mean: dict[str, float] = field(default_factory=dict)
    slice_std: dict[str, float] = field(default_factory=dict)

    def matches(self, sha256: str, val_fraction: float, slice_chars: int, n_slices: int) -> bool:
        """True when this profile was built for that corpus text and these settings."""
        return (
            self.sha256 == sha256
            and math.isclose(self.val_fraction, val_fraction)
            and self.slice_chars == slice_chars
            and self.n_slices == n_slices
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "corpus": self.corpus,
            "sha256": self.sha256,
            "val_fraction": self.val_fraction,
            "slice_chars": self.slice_chars,
            "n_slices": self.n_slices,
            "corpus_values": self.corpus_values,
            "slice_mean": self.slice_mean,
            "slice_std": self.slice_std,
            "class_dist": self.class_dist,
            "unigram": self.unigram,
            "lexicon": sorted(self.lexicon),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CorpusProfile:
        if data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"not a {PROFILE_FORMAT} record")
        return cls(
            corpus=str(data["corpus"]),
            sha256=str(data["sha256"]),
            val_fraction=float(data["val_fraction"]),
            slice_chars=int(data["slice_chars"]),
            n_slices=int(data["n_slices"]),
            lexicon=frozenset(data["lexicon"]),
            class_dist={k: float(v) for k, v in data["class_dist"].items()},
            unigram={k: float(v) for k, v in data["unigram"].items()},
            corpus_values={k: _float(v) for k, v in data["corpus_values"].items()},
            slice_mean={k: _float(v) for k, v in data["slice_mean"].items()},
            slice_std={k: _float(v) for k, v in data["slice_std"].items()},
        )


def _float(v: Any) -> float:
    return math.nan if v is None else float(v)


def sample_measures(text: str, profile: CorpusProfile) -> dict[str, float]:
    """Every measure of one sample against the corpus it should resemble.

    Word formation uses ``profile``'s word list; the style distances ``js_class`` and
    ``js_unigram`` are to ``profile``'s distributions; ``class_<name>`` are the sample's
    own character-class shares.
    """
    out: dict[str, float] = {"n_chars": float(len(text))}
    out.update(word_formation(text, profile.lexicon))
    out.update(layout(text))
    out.update(repetitiveness(text))
    cls = class_distribution(text)
    out.update({f"class_{c}": cls[c] for c in CLASSES})
    out["js_class"] = js_divergence(cls, profile.class_dist)
    out["js_unigram"] = js_divergence(unigram_distribution(text), profile.unigram)
    return out


def style_distances(text: str, profiles: Iterable[CorpusProfile]) -> dict[str, dict[str, float]]:
    """``{corpus: {"js_class": d, "js_unigram": d}}`` from ``text`` to each profile."""
    cls, uni = class_distribution(text), unigram_distribution(text)
    return {
        p.corpus: {
            "js_class": js_divergence(cls, p.class_dist),
            "js_unigram": js_divergence(uni, p.unigram),
        }
        for p in profiles
    }


def nearest_corpus(distances: Mapping[str, Mapping[str, float]], key: str = "js_unigram") -> str:
    """The corpus at the smallest style distance (``key``); ties go to the first name."""
    finite = {c: d[key] for c, d in distances.items() if not math.isnan(d[key])}
    if not finite:
        return ""
    return min(sorted(finite), key=lambda c: finite[c])


def line_start_slices(text: str, length: int, count: int) -> list[str]:
    """Up to ``count`` slices of ``length`` characters spread evenly over ``text``, each
    starting just after a newline (or at the start), as a newline-prompted sample does."""
    if length < 1 or count < 1 or not text:
        return []
    last = max(len(text) - length, 0)
    out: list[str] = []
    seen: set[int] = set()
    for pos in np.linspace(0, last, count).round().astype(int).tolist():
        # just after the first newline at or after pos, else after the one before it
        newline = text.find("\n", pos - 1, last) if pos else -1
        start = newline + 1 if newline >= 0 else (text.rfind("\n", 0, pos) + 1 if pos else 0)
        if start in seen:
            continue
        seen.add(start)
        out.append(text[start : start + length])
    return out


def build_profile(
    corpus: str,
    text: str,
    *,
    sha256: str = "",
    val_fraction: float = 0.1,
    slice_chars: int = 500,
    n_slices: int = 20,
) -> CorpusProfile:
    """The reference profile of a corpus: train split = the last ``1 - val_fraction`` is
    held out exactly as :meth:`domaingpt.data.EncodedCorpus.split` does (by character)."""
    if not text:
        raise ValueError(f"corpus {corpus!r} is empty")
    n_train = int(len(text) * (1.0 - val_fraction))
    train, held_out = text[:n_train], text[n_train:]
    if len(held_out) < slice_chars:  # a tiny corpus: slices from the whole text instead
        held_out = text
    counts = Counter(train)
    train_words = words(train)
    lengths = np.fromiter(map(len, train_words), dtype=np.int64, count=len(train_words))
    headings, lines = heading_counts(train)
    corpus_values = {
        "mean_word_len": float(lengths.mean()) if len(lengths) else math.nan,
        "long_word_fraction": _share(int((lengths >= LONG_WORD).sum()), len(lengths)),
        "space_share": _share(counts.get(" ", 0), len(train)),
        "newline_share": _share(counts.get("\n", 0), len(train)),
        "heading_share": _share(headings, lines),
    }
    profile = CorpusProfile(
        corpus=corpus,
        sha256=sha256,
        val_fraction=val_fraction,
        slice_chars=slice_chars,
        n_slices=n_slices,
        lexicon=frozenset(train_words),
        class_dist=class_distribution(counts),
        unigram=unigram_distribution(counts),
        corpus_values=corpus_values,
    )
    rows = [sample_measures(s, profile) for s in line_start_slices(held_out, slice_chars, n_slices)]
    keys = list(rows[0]) if rows else []
    mean = {k: _nanstat(np.nanmean, [r[k] for r in rows]) for k in keys}
    std = {k: _nanstat(np.nanstd, [r[k] for r in rows]) for k in keys}
    return replace(profile, slice_mean=mean, slice_std=std)


def _nanstat(fn, values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    return float(fn(arr)) if np.isfinite(arr).any() else math.nan

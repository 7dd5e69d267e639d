"""Part 1 of the study: character frequency analysis of each corpus.

:func:`compute_stats` counts every character (Unicode code point) of a text and keeps a
tidy table with one row per distinct character. From it come the class shares (see
:mod:`domaingpt.charclass`), the Unicode category shares, the *notable symbols*, a
summary table laid out like the study's, and the figures. :func:`write_stats` writes it
all to a directory and :func:`load_stats` reads the tables back.

Notable symbols (:meth:`CorpusStats.notable_symbols`) are chosen by a fixed rule, so the
"notable features" of a corpus are computed, never written by hand:

1. Candidates are characters that are neither ASCII letters, ASCII digits, whitespace
   nor newlines.
2. Non-ASCII candidates come first. They are grouped: letters and marks by script (the
   first word of their Unicode name: ``LATIN``, ``GREEK``, ``CJK``, ``ARABIC`` ...),
   everything else by Unicode general category (dashes, quotes, math symbols, currency
   ...). Groups are ordered by their total count (descending, ties by lowest code point)
   and taken round-robin, the most frequent character of each group first (ties by code
   point), so a few examples show the variety instead of ten accented Latin letters.
3. If fewer than ``k`` were found, *rare* ASCII symbols follow: ASCII candidates with a
   share below ``rare_share`` (default 0.1 %), ordered by count descending, ties by code
   point.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from domaingpt.core.io import atomic_write_text
from domaingpt.data.charclass import CLASSES, char_class, describe_char
from domaingpt.errors import DomainGPTError
from domaingpt.stages.stats.figures import plot_char_distribution, plot_class_shares

__all__ = [
    "COUNT_COLUMNS",
    "CorpusStats",
    "class_shares_markdown",
    "compute_stats",
    "md_escape",
    "stats_tables",
    "summary_markdown",
    "summary_table",
    "write_stats_files",
]

COUNT_COLUMNS: tuple[str, ...] = (
    "corpus",
    "char",
    "label",
    "codepoint",
    "count",
    "share",
    "rank",
    "char_class",
    "unicode_category",
    "non_ascii",
)

CONTEXT_WIDTH = 30
RARE_SHARE = 1e-3

CATEGORY_NAMES: dict[str, str] = {
    "Lu": "Letter, uppercase",
    "Ll": "Letter, lowercase",
    "Lt": "Letter, titlecase",
    "Lm": "Letter, modifier",
    "Lo": "Letter, other",
    "Mn": "Mark, nonspacing",
    "Mc": "Mark, spacing combining",
    "Me": "Mark, enclosing",
    "Nd": "Number, decimal digit",
    "Nl": "Number, letter",
    "No": "Number, other",
    "Pc": "Punctuation, connector",
    "Pd": "Punctuation, dash",
    "Ps": "Punctuation, open",
    "Pe": "Punctuation, close",
    "Pi": "Punctuation, initial quote",
    "Pf": "Punctuation, final quote",
    "Po": "Punctuation, other",
    "Sm": "Symbol, math",
    "Sc": "Symbol, currency",
    "Sk": "Symbol, modifier",
    "So": "Symbol, other",
    "Zs": "Separator, space",
    "Zl": "Separator, line",
    "Zp": "Separator, paragraph",
    "Cc": "Other, control",
    "Cf": "Other, format",
    "Cs": "Other, surrogate",
    "Co": "Other, private use",
    "Cn": "Other, not assigned",
}

_ASCII_ALNUM = frozenset(string.ascii_letters + string.digits)
_VISIBLE = {"\n": "⏎", "\r": "␍", "\t": "⇥"}


def _is_candidate(ch: str) -> bool:
    """A possible notable symbol: not an ASCII letter/digit, not whitespace or newline."""
    return ch not in _ASCII_ALNUM and not ch.isspace()


def _visible(snippet: str) -> str:
    out = []
    for c in snippet:
        if c in _VISIBLE:
            out.append(_VISIBLE[c])
        elif unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs"):
            out.append("\ufffd")
        else:
            out.append(c)
    return "".join(out)


def _group_key(ch: str) -> str:
    category = unicodedata.category(ch)
    if category[0] in "LM":
        name = unicodedata.name(ch, "")
        return name.split(" ", 1)[0] if name else category
    return category


def _share(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


@dataclass
class CorpusStats:
    """Character statistics of one corpus.

    ``counts`` has one row per distinct character (columns :data:`COUNT_COLUMNS`),
    sorted by count descending then code point, ``rank`` 1 being the most frequent.
    ``contexts`` maps each notable-symbol candidate to ``(offset of its first
    occurrence, snippet around it)``.
    """

    name: str
    n_chars: int
    n_bytes: int
    n_unique: int
    n_lines: int
    counts: pd.DataFrame = field(repr=False)
    contexts: dict[str, tuple[int, str]] = field(default_factory=dict, repr=False)

    # -- simple views --------------------------------------------------------------
    def top(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` most frequent characters (ties broken by code point)."""
        return self.counts.head(k).reset_index(drop=True)

    def count_of(self, ch: str) -> int:
        """How many times ``ch`` occurs (0 if never)."""
        hit = self.counts.loc[self.counts["char"] == ch, "count"]
        return int(hit.iloc[0]) if len(hit) else 0

    @property
    def non_ascii_count(self) -> int:
        """Number of non-ASCII characters in the text (occurrences)."""
        return int(self.counts.loc[self.counts["non_ascii"], "count"].sum())

    @property
    def non_ascii_share(self) -> float:
        """Fraction of the text that is non-ASCII."""
        return _share(self.non_ascii_count, self.n_chars)

    @property
    def n_non_ascii_unique(self) -> int:
        """Number of distinct non-ASCII characters."""
        return int(self.counts["non_ascii"].sum())

    def class_shares(self) -> pd.DataFrame:
        """One row per class of :data:`~domaingpt.charclass.CLASSES`, zeros included.

        Columns: corpus, char_class, n_distinct, count, share (sums to 1 over classes),
        non_ascii_count and non_ascii_share (the non-ASCII part of each class; their sum
        is :attr:`non_ascii_share`).
        """
        c = self.counts
        grouped = c.groupby("char_class", sort=False)
        count = grouped["count"].sum().reindex(CLASSES, fill_value=0)
        n_distinct = grouped.size().reindex(CLASSES, fill_value=0)
        non_ascii = (
            c.loc[c["non_ascii"]].groupby("char_class")["count"].sum().reindex(CLASSES)
        ).fillna(0)
        return pd.DataFrame(
            {
                "corpus": self.name,
                "char_class": list(CLASSES),
                "n_distinct": n_distinct.to_numpy(dtype="int64"),
                "count": count.to_numpy(dtype="int64"),
                "share": [_share(v, self.n_chars) for v in count],
                "non_ascii_count": non_ascii.to_numpy(dtype="int64"),
                "non_ascii_share": [_share(v, self.n_chars) for v in non_ascii],
            }
        )

    def class_share(self, cls: str) -> float:
        """Share of the text in one class."""
        if cls not in CLASSES:
            raise ValueError(f"unknown class {cls!r}; expected one of {CLASSES}")
        return _share(
            self.counts.loc[self.counts["char_class"] == cls, "count"].sum(), self.n_chars
        )

    def category_shares(self) -> pd.DataFrame:
        """Unicode general categories present: corpus, unicode_category, category_name,
        n_distinct, count, share; sorted by count descending."""
        g = self.counts.groupby("unicode_category")
        out = pd.DataFrame({"n_distinct": g.size(), "count": g["count"].sum()}).reset_index()
        out.insert(0, "corpus", self.name)
        out.insert(2, "category_name", out["unicode_category"].map(CATEGORY_NAMES))
        out["share"] = [_share(v, self.n_chars) for v in out["count"]]
        out = out.sort_values(["count", "unicode_category"], ascending=[False, True])
        return out.reset_index(drop=True)

    # -- notable symbols -----------------------------------------------------------
    def notable_symbols(self, k: int = 12, *, rare_share: float = RARE_SHARE) -> list[str]:
        """Up to ``k`` notable symbols, chosen by the rule in the module docstring."""
        if k <= 0:
            return []
        rows = [
            (ch, int(n))
            for ch, n in zip(self.counts["char"], self.counts["count"], strict=True)
            if _is_candidate(ch)
        ]
        # Non-ASCII: round-robin over script / category groups.
        groups: dict[str, list[tuple[str, int]]] = {}
        for ch, n in rows:
            if ord(ch) > 0x7F:
                groups.setdefault(_group_key(ch), []).append((ch, n))
        for members in groups.values():
            members.sort(key=lambda t: (-t[1], ord(t[0])))
        order = sorted(
            groups.values(),
            key=lambda m: (-sum(n for _, n in m), min(ord(ch) for ch, _ in m)),
        )
        picked: list[str] = []
        depth = 0
        while len(picked) < k and any(depth < len(m) for m in order):
            for members in order:
                if depth < len(members) and len(picked) < k:
                    picked.append(members[depth][0])
            depth += 1
        # Then rare ASCII symbols.
        if len(picked) < k:
            rare = [
                (ch, n)
                for ch, n in rows
                if ord(ch) <= 0x7F and _share(n, self.n_chars) < rare_share
            ]
            rare.sort(key=lambda t: (-t[1], ord(t[0])))
            picked.extend(ch for ch, _ in rare[: k - len(picked)])
        return picked

    def notable_examples(self, k: int = 12, *, rare_share: float = RARE_SHARE) -> pd.DataFrame:
        """The notable symbols with their count and the context of their first occurrence.

        Columns: corpus, order, char, label, codepoint, name (Unicode name), char_class,
        unicode_category, count, share, first_offset, context (whitespace made visible:
        ⏎ newline, ⇥ tab).
        """
        chars = self.notable_symbols(k, rare_share=rare_share)
        by_char = self.counts.set_index("char")
        records = []
        for i, ch in enumerate(chars, start=1):
            row = by_char.loc[ch]
            offset, context = self.contexts.get(ch, (-1, ""))
            records.append(
                {
                    "corpus": self.name,
                    "order": i,
                    "char": ch,
                    "label": describe_char(ch),
                    "codepoint": ord(ch),
                    "name": unicodedata.name(ch, ""),
                    "char_class": row["char_class"],
                    "unicode_category": row["unicode_category"],
                    "count": int(row["count"]),
                    "share": float(row["share"]),
                    "first_offset": offset,
                    "context": context,
                }
            )
        columns = [
            "corpus",
            "order",
            "char",
            "label",
            "codepoint",
            "name",
            "char_class",
            "unicode_category",
            "count",
            "share",
            "first_offset",
            "context",
        ]
        return pd.DataFrame.from_records(records, columns=columns)


def compute_stats(
    name: str, text: str, *, n_bytes: int | None = None, context_width: int = CONTEXT_WIDTH
) -> CorpusStats:
    """Count the characters of ``text``.

    ``n_bytes`` is the size of the file the text came from; when omitted it is the
    length of the UTF-8 encoding. ``n_lines`` counts ``"\\n"`` plus one for a last line
    without a final newline.
    """
    counter = Counter(text)
    n_chars = len(text)
    if n_bytes is None:
        n_bytes = len(text.encode("utf-8", errors="surrogatepass"))
    n_newlines = counter.get("\n", 0)
    n_lines = n_newlines + (1 if text and not text.endswith("\n") else 0)

    items = sorted(counter.items(), key=lambda t: (-t[1], ord(t[0])))
    chars = [ch for ch, _ in items]
    counts = [n for _, n in items]
    df = pd.DataFrame(
        {
            "corpus": pd.Series([name] * len(chars), dtype=object),
            "char": pd.Series(chars, dtype=object),
            "label": pd.Series([describe_char(ch) for ch in chars], dtype=object),
            "codepoint": pd.Series([ord(ch) for ch in chars], dtype="int64"),
            "count": pd.Series(counts, dtype="int64"),
            "share": pd.Series([_share(n, n_chars) for n in counts], dtype="float64"),
            "rank": pd.Series(range(1, len(chars) + 1), dtype="int64"),
            "char_class": pd.Series([char_class(ch) for ch in chars], dtype=object),
            "unicode_category": pd.Series([unicodedata.category(ch) for ch in chars], dtype=object),
            "non_ascii": pd.Series([ord(ch) > 0x7F for ch in chars], dtype=bool),
        },
        columns=list(COUNT_COLUMNS),
    )

    contexts: dict[str, tuple[int, str]] = {}
    for ch in chars:
        if _is_candidate(ch):
            i = text.find(ch)
            lo, hi = max(0, i - context_width), i + 1 + context_width
            contexts[ch] = (i, _visible(text[lo:hi]))

    return CorpusStats(
        name=name,
        n_chars=n_chars,
        n_bytes=int(n_bytes),
        n_unique=len(chars),
        n_lines=n_lines,
        counts=df,
        contexts=contexts,
    )


# -- summaries ---------------------------------------------------------------------


def summary_table(stats: Sequence[CorpusStats], top_k: int = 5) -> pd.DataFrame:
    """One row per corpus: sizes, most frequent characters, class shares, notable symbols.

    Shares are fractions in [0, 1]; ``most_frequent`` and ``notable_symbols`` are labels
    (see :func:`~domaingpt.charclass.describe_char`) joined by ``", "``.
    """
    rows = []
    for s in stats:
        top = s.top(top_k)
        shares = s.class_shares().set_index("char_class")["share"]
        row: dict[str, object] = {
            "corpus": s.name,
            "characters": s.n_chars,
            "bytes": s.n_bytes,
            "lines": s.n_lines,
            "unique_characters": s.n_unique,
            "non_ascii_unique": s.n_non_ascii_unique,
            "most_frequent": ", ".join(top["label"]),
            "top_k": top_k,
            "top_k_share": float(top["share"].sum()),
        }
        for cls in CLASSES:
            row[f"{cls}_share"] = float(shares[cls])
        row["non_ascii_share"] = s.non_ascii_share
        row["notable_symbols"] = ", ".join(describe_char(ch) for ch in s.notable_symbols())
        rows.append(row)
    return pd.DataFrame(rows)


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~$&])")


def md_escape(text: str) -> str:
    """Backslash-escape Markdown specials (``|``, backticks, ``<``, ``$`` ...) in text."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def _pct(x: float) -> str:
    v = 100.0 * x
    if v == 0:
        return "0 %"
    if v >= 1:
        return f"{v:.1f} %"
    if v >= 0.0001:
        return f"{v:.2g} %"
    return "< 0.0001 %"


_CLASS_WORDS = {
    "vowel": "vowel",
    "consonant": "consonant",
    "digit": "digit",
    "whitespace": "whitespace",
    "newline": "newline",
    "punctuation": "punctuation",
    "math_symbol": "math-symbol",
    "other": "other-character",
}


def _features(s: CorpusStats, others: Sequence[CorpusStats]) -> list[str]:
    shares = s.class_shares().set_index("char_class")["share"]
    letters = shares["vowel"] + shares["consonant"]
    feats = [
        f"{s.n_chars:,} characters in {s.n_lines:,} lines "
        f"({_share(s.n_chars, max(s.n_lines, 1)):.1f} per line)",
        f"letters {_pct(letters)}, digits {_pct(shares['digit'])}, "
        f"punctuation {_pct(shares['punctuation'])}, math symbols {_pct(shares['math_symbol'])}",
    ]
    # Classes where this corpus stands out against the others (at least 1.5x the next).
    if others:
        standout = []
        for cls in ("digit", "math_symbol", "punctuation", "newline", "whitespace", "other"):
            mine = shares[cls]
            best_other = max(o.class_share(cls) for o in others)
            if mine >= 1e-3 and mine >= 1.5 * best_other:
                ratio = mine / best_other if best_other else float("inf")
                standout.append((ratio, cls, mine, best_other))
        standout.sort(key=lambda t: (-t[0], CLASSES.index(t[1])))
        for _, cls, mine, best_other in standout[:2]:
            feats.append(
                f"highest {_CLASS_WORDS[cls]} share: {_pct(mine)} vs at most {_pct(best_other)}"
            )
    notable = s.notable_symbols()
    non_ascii = [ch for ch in notable if ord(ch) > 0x7F]
    if s.n_non_ascii_unique == 0:
        feats.append("ASCII only: no non-ASCII characters")
    else:
        n = s.n_non_ascii_unique
        examples = ", ".join(md_escape(describe_char(ch)) for ch in non_ascii[:6])
        feats.append(
            f"{n} non-ASCII symbol{'s' if n != 1 else ''} ({_pct(s.non_ascii_share)} of "
            f"characters), e.g. {examples}"
        )
    rare_ascii = [ch for ch in notable if ord(ch) <= 0x7F]
    if rare_ascii:
        feats.append(
            f"rare ASCII symbols (< {_pct(RARE_SHARE)} each): "
            + ", ".join(md_escape(describe_char(ch)) for ch in rare_ascii[:6])
        )
    return feats


def _display_name(name: str) -> str:
    return name[:1].upper() + name[1:]


def summary_markdown(stats: Sequence[CorpusStats], top_k: int = 5) -> str:
    """The study's table: Dataset | Unique Characters | Most Frequent Characters |
    Notable Features, with the features computed from the statistics."""
    lines = [
        "| Dataset | Unique Characters | Most Frequent Characters | Notable Features |",
        "| --- | ---: | --- | --- |",
    ]
    for s in stats:
        others = [o for o in stats if o is not s]
        most = ", ".join(md_escape(label) for label in s.top(top_k)["label"])
        feats = "<br>".join(f"• {f}" for f in _features(s, others))
        lines.append(f"| {md_escape(_display_name(s.name))} | {s.n_unique} | {most} | {feats} |")
    return "\n".join(lines) + "\n"


def class_shares_markdown(stats: Sequence[CorpusStats]) -> str:
    """Share of each character class per corpus, as a Markdown table (percent)."""
    header = "| Class | " + " | ".join(md_escape(_display_name(s.name)) for s in stats) + " |"
    lines = [header, "| --- |" + " ---: |" * len(stats)]
    tables = [s.class_shares().set_index("char_class") for s in stats]
    for cls in CLASSES:
        cells = " | ".join(_pct(t.loc[cls, "share"]) for t in tables)
        lines.append(f"| {md_escape(cls)} | {cells} |")
    cells = " | ".join(_pct(s.non_ascii_share) for s in stats)
    lines.append(f"| non\\-ASCII (any class) | {cells} |")
    return "\n".join(lines) + "\n"


# -- files -------------------------------------------------------------------------


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "corpus"


def checked_stats(stats: Sequence[CorpusStats]) -> list[CorpusStats]:
    """``stats`` as a list; an error for none, or for names that clash as file names."""
    stats = list(stats)
    if not stats:
        raise DomainGPTError("no corpora given: nothing to write")
    names = [s.name for s in stats]
    safe = [_safe_name(n) for n in names]
    if len(set(safe)) != len(safe):
        raise DomainGPTError(f"corpus names must be distinct (as file names): {names}")
    return stats


def stats_tables(stats: Sequence[CorpusStats]) -> dict[str, pd.DataFrame]:
    """The stage's tables for the corpora: ``char_counts``, ``class_shares``,
    ``category_shares``, ``summary`` and ``notable``."""
    stats = checked_stats(stats)
    return {
        "char_counts": pd.concat([s.counts for s in stats], ignore_index=True),
        "class_shares": pd.concat([s.class_shares() for s in stats], ignore_index=True),
        "category_shares": pd.concat([s.category_shares() for s in stats], ignore_index=True),
        "summary": summary_table(stats),
        "notable": pd.concat([s.notable_examples() for s in stats], ignore_index=True),
    }


def write_stats_files(stats: Sequence[CorpusStats], out_dir: str | Path) -> dict[str, Path]:
    """Write the Markdown summary and the figures for the corpora to ``out_dir``:
    ``summary.md``, ``distribution_<corpus>.png`` per corpus and ``class_shares.png``
    (keys ``summary_md``, ``distribution_<corpus>``, ``class_shares_png``)."""
    stats = checked_stats(stats)
    safe = [_safe_name(s.name) for s in stats]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    class_shares = pd.concat([s.class_shares() for s in stats], ignore_index=True)
    md = "\n".join(
        [
            "# Character Frequency Analysis",
            "",
            summary_markdown(stats),
            "## Character classes (share of all characters)",
            "",
            class_shares_markdown(stats),
            "Notable symbols: non-ASCII characters first (round-robin over scripts and "
            "Unicode categories, most frequent first), then ASCII symbols rarer than "
            f"{_pct(RARE_SHARE)}. Classes are defined in `domaingpt.charclass`.",
            "",
        ]
    )
    paths["summary_md"] = atomic_write_text(out / "summary.md", md)
    for s, stem in zip(stats, safe, strict=True):
        paths[f"distribution_{stem}"] = plot_char_distribution(
            s.counts,
            out / f"distribution_{stem}.png",
            title=f"{_display_name(s.name)}: character distribution",
        )
    paths["class_shares_png"] = plot_class_shares(class_shares, out / "class_shares.png")
    return paths

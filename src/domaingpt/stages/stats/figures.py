"""Figures of character statistics, drawn from the stage's tables (``plot_xxx(table, path) -> Path``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.patches import Rectangle

from domaingpt.data.charclass import CLASSES
from domaingpt.report.plotting import (
    CLASS_COLORS,
    figure_style,
    plain,
    report_size,
    save_figure,
    subplots,
    tick_label,
)


def non_ascii_strip(counts: pd.DataFrame, limit: int = 180, per_line: int = 64) -> str:
    """The corpus's non-ASCII characters, most frequent first, as lines of text for a
    figure (the study's "notable features": °, ℒ, 万, ش ...). Combining marks are shown on
    a dotted circle, invisible ones by code point."""
    if "non_ascii" not in counts.columns or "label" not in counts.columns:
        return ""
    rows = counts[counts["non_ascii"].astype(bool)]
    if "rank" in rows.columns:
        rows = rows.sort_values("rank")
    shown = [
        str(label).split(" ", 1)[1]
        if str(label).startswith("U+") and " ◌" in str(label)
        else tick_label(str(label))
        for label in rows["label"].head(limit)
    ]
    lines = [" ".join(shown[i : i + per_line]) for i in range(0, len(shown), per_line)]
    more = f" (+{len(rows) - limit} more)" if len(rows) > limit else ""
    return plain("\n".join(lines) + more) if lines else ""


def plot_char_distribution(
    counts: pd.DataFrame,
    path: str | Path,
    *,
    top_n: int = 40,
    title: str | None = None,
) -> Path:
    """Bar chart of the ``top_n`` most frequent characters, coloured by class, with a
    log-log rank/frequency panel of all characters, and below them the corpus's non-ASCII
    characters (which the default font cannot all draw: see :mod:`domaingpt.report.plotting`).

    ``counts`` is :attr:`domaingpt.stats.CorpusStats.counts` (columns label, count,
    share, rank, char_class).
    """
    df = counts.sort_values("rank") if "rank" in counts.columns else counts
    top = df.head(top_n)
    with figure_style():
        fig, (ax, ax_rank) = subplots(
            1, 2, figsize=report_size(14, 5), gridspec_kw={"width_ratios": [3.2, 1]}
        )
        x = range(len(top))
        colors = [CLASS_COLORS.get(c, "#333333") for c in top["char_class"]]
        ax.bar(x, 100.0 * top["share"], color=colors, edgecolor="none")
        ax.set_xticks(list(x))
        ax.set_xticklabels([tick_label(str(s)) for s in top["label"]], rotation=90, fontsize=8)
        ax.set_xlim(-0.7, max(len(top), 1) - 0.3)
        ax.set_ylabel("share of characters (%)")
        ax.grid(axis="x", visible=False)
        ax.set_title(title or f"Top {len(top)} characters")
        present = [c for c in CLASSES if c in set(top["char_class"])]
        handles = [Rectangle((0, 0), 1, 1, color=CLASS_COLORS[c]) for c in present]
        if handles:
            ax.legend(handles, present, fontsize=8, frameon=False, ncol=2)

        if len(df):
            ax_rank.loglog(df["rank"], df["count"], marker=".", markersize=3, linewidth=1)
        ax_rank.set_xlabel("rank")
        ax_rank.set_ylabel("count")
        ax_rank.set_title(f"All {len(df)} characters (log-log)")
        strip = non_ascii_strip(df)
        if strip:
            n = int(df["non_ascii"].astype(bool).sum())
            fig.text(
                0.01,
                0.01,
                f"{n} non-ASCII characters, most frequent first:\n{strip}",
                fontsize=9,
                va="bottom",
                ha="left",
            )
            fig.tight_layout(rect=(0, 0.06 + 0.035 * strip.count("\n"), 1, 1))
        else:
            fig.tight_layout()
        caption = (
            f"{title or 'Character distribution'}. The {top_n} most frequent characters "
            "coloured by class, all characters by rank (log-log), and the non-ASCII ones"
        )
        return save_figure(fig, path, caption=caption, tight=False)


def plot_class_shares(class_shares: pd.DataFrame, path: str | Path) -> Path:
    """Grouped bars: share of each character class, one bar per corpus.

    ``class_shares`` is tidy with columns corpus, char_class, share (as written by
    :meth:`domaingpt.stats.CorpusStats.class_shares`).
    """
    table = class_shares.pivot_table(
        index="char_class", columns="corpus", values="share", aggfunc="sum", sort=False
    )
    table = table.reindex([c for c in CLASSES if c in table.index])
    corpora = list(dict.fromkeys(class_shares["corpus"]))
    table = table[corpora].fillna(0.0)
    with figure_style():
        fig, ax = subplots(figsize=report_size(11, 4.8))
        n = max(len(corpora), 1)
        width = 0.8 / n
        cmap = colormaps["tab10"]
        for j, corpus in enumerate(corpora):
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(table))]
            vals = 100.0 * table[corpus].to_numpy()
            bars = ax.bar(xs, vals, width=width * 0.95, label=str(corpus), color=cmap(j % 10))
            for bar, v in zip(bars, vals, strict=True):
                text = "0" if v == 0 else f"{v:.1f}" if v >= 0.1 else f"{v:.1g}"
                ax.annotate(
                    text,
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize="small",
                    rotation=90 if n > 2 else 0,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        ax.set_xticks(range(len(table)))
        ax.set_xticklabels([c.replace("_", " ") for c in table.index])
        ax.set_ylabel("share of characters (%)")
        ax.set_ylim(0, max(float(100.0 * table.to_numpy().max()) * 1.18, 1.0))
        ax.grid(axis="x", visible=False)
        ax.set_title("Character classes by corpus")
        ax.legend(frameon=False)
        fig.tight_layout()
        caption = "Character classes by corpus: the share of each class (%), one bar per corpus"
        return save_figure(fig, path, caption=caption, tight=False)

"""Figures of the study, as plain functions ``plot_xxx(data, path, ...) -> Path``.

Conventions for every function here:

* the Agg backend (set at import), so figures render without a display;
* drawn inside :func:`figure_style`, which selects a font list with per-glyph fallback:
  DejaVu Sans first (always available, ships with matplotlib), then any installed font
  with wider coverage (Noto, CJK fonts, STIX ...), so non-ASCII characters render as
  well as the machine allows; "Glyph ... missing" warnings are silenced;
* saved with :func:`save_figure`: atomically (temp file + rename) and the figure is
  closed afterwards.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib import font_manager
from matplotlib.figure import Figure

from .charclass import CLASSES
from .io import atomic_write_bytes

__all__ = [
    "CLASS_COLORS",
    "figure_style",
    "font_families",
    "plot_char_distribution",
    "plot_class_shares",
    "save_figure",
]

# Missing glyphs render as boxes; one warning per glyph per draw is only noise.
warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
warnings.filterwarnings(
    "ignore", message=r"Matplotlib currently does not support \w+ natively", category=UserWarning
)

# One colour per character class, shared by every figure (tab10 order).
CLASS_COLORS: dict[str, str] = dict(
    zip(
        CLASSES,
        ("#1f77b4", "#aec7e8", "#ff7f0e", "#7f7f7f", "#c7c7c7", "#2ca02c", "#d62728", "#9467bd"),
        strict=True,
    )
)

# Tried in order after DejaVu Sans; only installed ones are used.
_FALLBACK_FONTS = (
    "Noto Sans",
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans SC",
    "Noto Sans JP",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "Noto Sans Arabic",
    "Noto Naskh Arabic",
    "Noto Sans Hebrew",
    "Noto Sans Devanagari",
    "Noto Sans Thai",
    "Noto Sans Math",
    "Noto Sans Symbols",
    "Noto Sans Symbols 2",
    "Arial Unicode MS",
    "STIXGeneral",
    "Symbola",
)


@lru_cache(maxsize=1)
def font_families() -> tuple[str, ...]:
    """The font families used, DejaVu Sans first, then installed fallbacks."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ("DejaVu Sans", *(f for f in _FALLBACK_FONTS if f in installed))


@contextmanager
def figure_style() -> Iterator[None]:
    """rc settings for the study's figures; draw and save inside this block."""
    rc = {
        "font.family": "sans-serif",
        "font.sans-serif": list(font_families()),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.axisbelow": True,
        "figure.dpi": 100,
        "savefig.dpi": 150,
    }
    fm_logger = logging.getLogger("matplotlib.font_manager")
    level = fm_logger.level
    fm_logger.setLevel(max(level, logging.ERROR))  # no "findfont: not found" chatter
    try:
        with plt.rc_context(rc), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from")
            yield
    finally:
        fm_logger.setLevel(level)


def save_figure(
    fig: Figure, path: str | Path, *, dpi: int | None = None, tight: bool = True
) -> Path:
    """Save ``fig`` as PNG (or the format of the suffix) atomically, then close it.

    ``tight`` crops to the drawn content (``bbox_inches="tight"``, an extra layout pass);
    pass ``False`` for a figure already laid out with ``tight_layout``.
    """
    path = Path(path)
    try:
        buf = io.BytesIO()
        fmt = path.suffix.lstrip(".").lower() or "png"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from")
            fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches="tight" if tight else None)
        atomic_write_bytes(path, buf.getvalue())
    finally:
        plt.close(fig)
    return path


def _tick_label(label: str, max_len: int = 12) -> str:
    """Short form of a :func:`~domaingpt.charclass.describe_char` label for a tick."""
    if label.startswith("U+") and " <" in label:
        return label.split(" ", 1)[0]
    return label if len(label) <= max_len else label[: max_len - 1] + "…"


def plot_char_distribution(
    counts: pd.DataFrame,
    path: str | Path,
    *,
    top_n: int = 40,
    title: str | None = None,
) -> Path:
    """Bar chart of the ``top_n`` most frequent characters, coloured by class, with a
    log-log rank/frequency panel of all characters.

    ``counts`` is :attr:`domaingpt.stats.CorpusStats.counts` (columns label, count,
    share, rank, char_class).
    """
    df = counts.sort_values("rank") if "rank" in counts.columns else counts
    top = df.head(top_n)
    with figure_style():
        fig, (ax, ax_rank) = plt.subplots(
            1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3.2, 1]}
        )
        x = range(len(top))
        colors = [CLASS_COLORS.get(c, "#333333") for c in top["char_class"]]
        ax.bar(x, 100.0 * top["share"], color=colors, edgecolor="none")
        ax.set_xticks(list(x))
        ax.set_xticklabels([_tick_label(str(s)) for s in top["label"]], rotation=90, fontsize=8)
        ax.set_xlim(-0.7, max(len(top), 1) - 0.3)
        ax.set_ylabel("share of characters (%)")
        ax.grid(axis="x", visible=False)
        ax.set_title(title or f"Top {len(top)} characters")
        present = [c for c in CLASSES if c in set(top["char_class"])]
        handles = [plt.Rectangle((0, 0), 1, 1, color=CLASS_COLORS[c]) for c in present]
        if handles:
            ax.legend(handles, present, fontsize=8, frameon=False, ncol=2)

        if len(df):
            ax_rank.loglog(df["rank"], df["count"], marker=".", markersize=3, linewidth=1)
        ax_rank.set_xlabel("rank")
        ax_rank.set_ylabel("count")
        ax_rank.set_title(f"All {len(df)} characters (log-log)")
        fig.tight_layout()
        return save_figure(fig, path, tight=False)


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
        fig, ax = plt.subplots(figsize=(11, 4.8))
        n = max(len(corpora), 1)
        width = 0.8 / n
        cmap = plt.get_cmap("tab10")
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
                    fontsize=6.5,
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
        return save_figure(fig, path, tight=False)


def plot_loss_curves(runs: dict[str, list[dict]], path: str | Path) -> Path:
    """Train and val loss against iteration, one colour per model (rows of metrics.jsonl)."""
    with figure_style():
        fig, ax = plt.subplots(figsize=(7, 4))
        for i, (name, rows) in enumerate(runs.items()):
            color = f"C{i}"
            tr = [(r["iter"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
            va = [(r["iter"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
            if tr:
                ax.plot(*zip(*tr, strict=True), color=color, alpha=0.5, lw=1, label=f"{name} train")
            if va:
                ax.plot(
                    *zip(*va, strict=True), color=color, lw=2, marker="o", ms=3, label=f"{name} val"
                )
        ax.set_xlabel("iteration")
        ax.set_ylabel("cross-entropy (nats / character)")
        ax.set_title("Training loss")
        ax.legend(fontsize=8)
        return save_figure(fig, path)

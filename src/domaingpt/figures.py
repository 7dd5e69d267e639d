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
from typing import Any

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
    "plot_adaptation_curves",
    "plot_char_distribution",
    "plot_class_shares",
    "plot_loss_along_training",
    "plot_loss_matrix",
    "plot_metric_timeline",
    "plot_style_shift",
    "plot_zero_shot_vs_study",
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


def plot_loss_matrix(
    panels: dict[str, pd.DataFrame], path: str | Path, *, unit: str = "nats / character"
) -> Path:
    """Heatmaps of zero-shot loss matrices (rows = model, columns = corpus), one panel
    per matrix, on one shared colour scale so the panels' patterns compare."""
    import numpy as np

    values = [float(v) for m in panels.values() for v in m.to_numpy().ravel() if v == v]
    vmin, vmax = (min(values), max(values)) if values else (0.0, 1.0)
    with figure_style():
        widths = [max(m.shape[1], 1) for m in panels.values()]
        fig, axes = plt.subplots(
            1,
            len(panels),
            figsize=(
                1.4 * sum(widths) + 2.5 * len(panels),
                1.1 * max(m.shape[0] for m in panels.values()) + 1.8,
            ),
            gridspec_kw={"width_ratios": widths},
            squeeze=False,
            layout="constrained",
        )
        image = None
        for k, (ax, (title, matrix)) in enumerate(zip(axes[0], panels.items(), strict=True)):
            data = matrix.to_numpy(dtype=float)
            image = ax.imshow(data, cmap="viridis_r", vmin=vmin, vmax=vmax, aspect="auto")
            ax.set_xticks(range(data.shape[1]))
            ax.set_xticklabels([str(c) for c in matrix.columns], rotation=30, ha="right")
            ax.set_yticks(range(data.shape[0]))
            ax.set_yticklabels([str(r) for r in matrix.index])
            ax.set_xlabel("evaluated on corpus")
            if k == 0:
                ax.set_ylabel("model trained on")
            ax.set_title(title, fontsize=10)
            ax.grid(False)
            mid = (vmin + vmax) / 2
            for (i, j), v in np.ndenumerate(data):
                if v == v:
                    ax.text(
                        j,
                        i,
                        f"{v:.3f}",
                        ha="center",
                        va="center",
                        fontsize=9,
                        color="white" if v > mid else "black",
                    )
        if image is not None:
            fig.colorbar(image, ax=list(axes[0]), label=f"cross-entropy ({unit})", shrink=0.85)
        fig.suptitle("Zero-shot loss", fontsize=12)
        return save_figure(fig, path)


def plot_loss_along_training(table: pd.DataFrame, path: str | Path) -> Path:
    """Zero-shot loss against checkpoint iteration: one panel per model, one line per
    corpus, with its confidence band (rows of ``eval/zero_shot.csv``)."""
    models = list(dict.fromkeys(table["model"]))
    corpora = list(dict.fromkeys(table["corpus"]))
    with figure_style():
        fig, axes = plt.subplots(
            1, len(models), figsize=(4.6 * len(models), 3.8), sharey=True, squeeze=False
        )
        for ax, model in zip(axes[0], models, strict=True):
            rows = table[table["model"] == model]
            for k, corpus in enumerate(corpora):
                r = rows[rows["corpus"] == corpus].sort_values("iteration")
                if r.empty:
                    continue
                style = "-" if corpus == model else "--"
                ax.plot(
                    r["iteration"],
                    r["loss_nats"],
                    style,
                    marker="o",
                    ms=3,
                    color=f"C{k}",
                    label=str(corpus),
                )
                if r["ci_low"].notna().any():
                    ax.fill_between(
                        r["iteration"], r["ci_low"], r["ci_high"], color=f"C{k}", alpha=0.2, lw=0
                    )
            ax.set_xscale("symlog", linthresh=10)
            ax.set_xlabel("training iteration of the checkpoint")
            ax.set_title(f"model trained on {model}", fontsize=10)
        axes[0][0].set_ylabel("cross-entropy (nats / character)")
        axes[0][-1].legend(title="evaluated on", fontsize=8, frameon=False)
        fig.suptitle("Zero-shot loss along training (solid: in-domain)", fontsize=12)
        fig.tight_layout()
        return save_figure(fig, path, tight=False)


def plot_adaptation_curves(
    curves: pd.DataFrame,
    path: str | Path,
    *,
    value: str = "target_loss",
    ylabel: str = "target-corpus loss (nats / character)",
    title: str = "Few-shot adaptation",
) -> Path:
    """``value`` against adaptation step: one panel per (source, target) pair, one line
    per start point (mean over seeds) with a band from the lowest to the highest seed."""
    import numpy as np

    pairs = list(dict.fromkeys(zip(curves["source"], curves["target"], strict=True)))
    n = max(len(pairs), 1)
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    order = ["final", "early", "scratch"]
    starts = sorted(
        dict.fromkeys(curves["start"]), key=lambda s: (order.index(s) if s in order else 9, s)
    )
    colors = {"final": "C0", "early": "C1", "scratch": "C7"}
    with figure_style():
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
        for ax, (source, target) in zip(axes.ravel(), pairs, strict=False):
            rows = curves[(curves["source"] == source) & (curves["target"] == target)]
            for k, start in enumerate(starts):
                r = rows[rows["start"] == start]
                if r.empty:
                    continue
                g = r.groupby("step")[value].agg(["mean", "min", "max", "count"]).sort_index()
                color = colors.get(start, f"C{k + 2}")
                seeds = int(g["count"].max())
                ax.plot(
                    g.index,
                    g["mean"],
                    marker="o",
                    ms=3,
                    color=color,
                    label=f"{start} ({seeds} seed{'s' if seeds != 1 else ''})",
                )
                ax.fill_between(g.index, g["min"], g["max"], color=color, alpha=0.2, lw=0)
            ax.set_title(f"{source} → {target}", fontsize=10)
            ax.set_xlabel("adaptation step")
            ax.set_ylabel(ylabel, fontsize=9)
            ax.legend(fontsize=8, frameon=False, title="start")
        for ax in axes.ravel()[len(pairs) :]:
            ax.set_visible(False)
        fig.suptitle(title, fontsize=12)
        fig.tight_layout()
        return save_figure(fig, path, tight=False)


def plot_zero_shot_vs_study(
    zero_shot: pd.DataFrame, published: dict[str, dict[str, float]], path: str | Path
) -> Path:
    """Grouped bars per model: this run's zero-shot loss on each corpus (with its 95 % CI)
    beside the study's published value (hatched), where the study has one.

    ``zero_shot`` has columns model, corpus, loss_nats (and ci_low, ci_high if known).
    """
    models = list(dict.fromkeys(zero_shot["model"]))
    corpora = list(dict.fromkeys(zero_shot["corpus"]))
    with figure_style():
        fig, axes = plt.subplots(
            1,
            len(models),
            figsize=(3.6 * max(len(models), 1) + 0.6, 3.8),
            sharey=True,
            squeeze=False,
        )
        for ax, model in zip(axes[0], models, strict=True):
            rows = zero_shot[zero_shot["model"] == model].set_index("corpus")
            for i, corpus in enumerate(corpora):
                color = f"C{i % 10}"
                if corpus in rows.index:
                    r = rows.loc[corpus]
                    err = None
                    if {"ci_low", "ci_high"} <= set(rows.columns):
                        err = [[r["loss_nats"] - r["ci_low"]], [r["ci_high"] - r["loss_nats"]]]
                    ax.bar(i - 0.2, r["loss_nats"], 0.4, color=color, yerr=err, capsize=3)
                value = published.get(model, {}).get(corpus)
                if value is not None:
                    ax.bar(i + 0.2, value, 0.4, color="white", edgecolor=color, hatch="//")
            ax.set_xticks(range(len(corpora)))
            ax.set_xticklabels([str(c) for c in corpora], rotation=30, ha="right")
            ax.set_title(f"{model} model")
            ax.grid(axis="x", visible=False)
        axes[0][0].set_ylabel("cross-entropy (nats / character)")
        handles = [
            plt.Rectangle((0, 0), 1, 1, color="C0"),
            plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="C0", hatch="//"),
        ]
        fig.legend(handles, ["this run (95 % CI)", "the study"], loc="upper right", frameon=False)
        fig.tight_layout(rect=(0, 0, 0.86, 1))
        return save_figure(fig, path, tight=False)


# --- softmax inspection and saliency (domaingpt.probe, domaingpt.saliency) ------------

_DOMAIN_STYLE = {
    "in": ("C0", "-", "in-domain"),
    "out": ("C3", "--", "out-of-domain"),
    "user": ("C2", ":", "user prompts"),
}


def _plain(text: str) -> str:
    """Text drawn literally: ``$`` would start mathtext, control characters are shown."""
    shown = str(text).replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")
    return shown.replace("$", r"\$")


def _iteration_axis(ax, iterations) -> None:
    its = [int(i) for i in iterations]
    if its and max(its) >= 100 and min(its) >= 0:
        ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("iteration")


def _panels(n: int, width: float = 4.6, height: float = 3.4, max_cols: int = 3):
    cols = max(1, min(n, max_cols))
    rows = max(1, -(-n // cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows), squeeze=False, sharey=True
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _grid(n_rows: int, n_cols: int, cell: tuple[float, float], extra_height: float, **kwargs: Any):
    """A figure of ``n_rows`` × ``n_cols`` panels (at least one each), ``cell`` inches a
    panel plus ``extra_height`` inches for titles; ``axes`` is always 2-D."""
    rows, cols = max(n_rows, 1), max(n_cols, 1)
    return plt.subplots(
        rows,
        cols,
        figsize=(cell[0] * cols, cell[1] * rows + extra_height),
        squeeze=False,
        **kwargs,
    )


def plot_probe_curves(summary: pd.DataFrame, path: str | Path, value: str = "entropy") -> Path:
    """Mean entropy (or p(true)) against iteration, in- vs out-of-domain, one panel per
    model, with the 95 % CI as a band (``summary`` is probe/summary.csv)."""
    models = sorted(summary["model"].unique())
    with figure_style():
        fig, axes = _panels(len(models))
        for ax, model in zip(axes, models, strict=True):
            m = summary[summary["model"] == model]
            for domain, (color, ls, label) in _DOMAIN_STYLE.items():
                d = m[m["domain"] == domain].sort_values("iteration")
                if d.empty:
                    continue
                x = d["iteration"].to_numpy()
                ax.plot(x, d[f"{value}_mean"], color=color, ls=ls, marker="o", ms=3, label=label)
                ax.fill_between(
                    x, d[f"{value}_ci_low"], d[f"{value}_ci_high"], color=color, alpha=0.15, lw=0
                )
            _iteration_axis(ax, m["iteration"])
            ax.set_title(f"{model} model")
        axes[0].set_ylabel("entropy (bits)" if value == "entropy" else "p(true next character)")
        axes[0].legend(fontsize=8, frameon=False)
        fig.suptitle(
            "Next-character entropy along training"
            if value == "entropy"
            else "Probability of the true next character along training"
        )
        fig.tight_layout()
        return save_figure(fig, path, tight=False)


def plot_entropy_positions(positions: pd.DataFrame, path: str | Path) -> Path:
    """Heatmap of mean entropy by checkpoint (rows) and position in the prompt (columns),
    one panel per model and domain (``positions`` is probe/positions.csv)."""
    df = positions[positions["domain"].isin(["in", "out"])].copy()
    df["weighted"] = df["mean_entropy_bits"] * df["n"]
    g = df.groupby(["model", "domain", "iteration", "position"], sort=True)[["weighted", "n"]].sum()
    g = (g["weighted"] / g["n"]).rename("entropy").reset_index()
    models = sorted(g["model"].unique())
    domains = [d for d in ("in", "out") if d in set(g["domain"])]
    vmin, vmax = (float(g["entropy"].min()), float(g["entropy"].max())) if len(g) else (0, 1)
    with figure_style():
        fig, axes = _grid(len(models), len(domains), (5.2, 2.6), 0.6, layout="constrained")
        image = None
        for r, model in enumerate(models):
            for c, domain in enumerate(domains):
                ax = axes[r][c]
                m = g[(g["model"] == model) & (g["domain"] == domain)]
                table = m.pivot(index="iteration", columns="position", values="entropy")
                image = ax.imshow(
                    table.to_numpy(), aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax
                )
                ax.set_yticks(range(len(table.index)))
                ax.set_yticklabels([str(i) for i in table.index], fontsize=7)
                ax.set_ylabel("iteration")
                if r == len(models) - 1:
                    ax.set_xlabel("position in prompt")
                ax.grid(False)
                ax.set_title(f"{model} model, {_DOMAIN_STYLE[domain][2]}", fontsize=10)
        if image is not None:
            fig.colorbar(image, ax=axes, label="mean entropy (bits)", shrink=0.8)
        fig.suptitle("Entropy of the next-character distribution at each position")
        return save_figure(fig, path, tight=False)


def plot_topk_bars(
    topk: pd.DataFrame,
    prompts: pd.DataFrame,
    path: str | Path,
    *,
    title: str = "",
    max_iterations: int = 4,
    context_chars: int = 28,
) -> Path:
    """Top-k next characters of a few prompts (rows) at a few checkpoints (columns); the
    true next character is orange. ``topk`` is probe/topk.csv filtered to one model."""
    import numpy as np

    ids = list(dict.fromkeys(topk["prompt_id"]))
    iters = sorted(topk["iteration"].unique())
    iters = [i for i in iters if i > 0] or iters  # iteration 0 is uniform: nothing to see
    if len(iters) > max_iterations:
        pick = np.unique(np.linspace(0, len(iters) - 1, max_iterations).round().astype(int))
        iters = [iters[i] for i in pick]
    by_id = prompts.set_index("prompt_id")
    with figure_style():
        fig, axes = _grid(len(ids), len(iters), (2.9, 1.9), 0.5, sharex=True)
        for r, pid in enumerate(ids):
            p = by_id.loc[pid]
            tail = str(p["text"])[-context_chars:]
            for c, it in enumerate(iters):
                ax = axes[r][c]
                d = topk[(topk["prompt_id"] == pid) & (topk["iteration"] == it)].sort_values("k")
                colors = ["#ff7f0e" if t else "#1f77b4" for t in d["is_target"]]
                y = np.arange(len(d))[::-1]
                ax.barh(y, d["prob"], color=colors)
                ax.set_yticks(y)
                ax.set_yticklabels([_plain(s) for s in d["label"]], fontsize=8)
                ax.set_xlim(0, 1)
                ax.grid(axis="y", visible=False)
                if r == 0:
                    ax.set_title(f"iteration {it}", fontsize=9)
                if c == 0:
                    ax.set_ylabel(
                        f"…{_plain(tail)}\n→ {_plain(p['target_label'])} ({p['corpus']})",
                        fontsize=7,
                        rotation=0,
                        ha="right",
                        va="center",
                    )
            for ax in axes[-1]:
                ax.set_xlabel("probability")
        fig.suptitle(_plain(title or "Top-k next characters"))
        fig.tight_layout()
        return save_figure(fig, path, tight=True)


_GROUP_ORDER = {
    "char_class": list(CLASSES),
    "relpos": ["current_word", "boundary", "previous_word", "further_back"],
}


def plot_saliency_groups(table: pd.DataFrame, by: str, path: str | Path, title: str) -> Path:
    """Lift (mean share relative to the prompt's average; 1 = average) of each group, bars
    per model, one panel per method; in-domain prompts at each model's last checkpoint."""
    import numpy as np

    last = table.groupby("model")["iteration"].transform("max") == table["iteration"]
    df = table[last & (table["domain"] == "in")]
    if df.empty:
        df = table[last]
    methods = list(dict.fromkeys(df["method"]))
    models = sorted(df["model"].unique())
    groups = [g for g in _GROUP_ORDER.get(by, sorted(df[by].unique())) if g in set(df[by])]
    with figure_style():
        fig, axes = _panels(len(methods), width=5.6, height=3.6)
        width = 0.8 / max(len(models), 1)
        for ax, method in zip(axes, methods, strict=True):
            m = df[df["method"] == method]
            for j, model in enumerate(models):
                d = m[m["model"] == model].groupby(by)["lift"].mean()
                xs = np.arange(len(groups)) - 0.4 + width * (j + 0.5)
                ax.bar(xs, [d.get(g, np.nan) for g in groups], width * 0.95, label=model)
            ax.axhline(1.0, color="#555", lw=0.8, ls="--")
            ax.set_xticks(range(len(groups)))
            ax.set_xticklabels([g.replace("_", " ") for g in groups], rotation=45, ha="right")
            ax.set_title(method.replace("_", " "))
            ax.grid(axis="x", visible=False)
        axes[0].set_ylabel("lift (1 = prompt average)")
        axes[0].legend(fontsize=8, frameon=False, title="model")
        fig.suptitle(title)
        fig.tight_layout()
        return save_figure(fig, path, tight=False)


def plot_saliency_checkpoints(by_checkpoint: pd.DataFrame, path: str | Path) -> Path:
    """Mean total attribution magnitude per prompt against iteration, one panel per
    method, one colour per model, solid in-domain and dashed out-of-domain."""
    methods = list(dict.fromkeys(by_checkpoint["method"]))
    models = sorted(by_checkpoint["model"].unique())
    with figure_style():
        fig, axes = _panels(len(methods))
        for ax, method in zip(axes, methods, strict=True):
            m = by_checkpoint[by_checkpoint["method"] == method]
            for j, model in enumerate(models):
                for domain, ls in (("in", "-"), ("out", "--"), ("user", ":")):
                    d = m[(m["model"] == model) & (m["domain"] == domain)].sort_values("iteration")
                    if d.empty:
                        continue
                    ax.plot(
                        d["iteration"],
                        d["total_magnitude_mean"],
                        color=f"C{j}",
                        ls=ls,
                        marker="o",
                        ms=3,
                        label=f"{model} ({domain})",
                    )
            _iteration_axis(ax, m["iteration"])
            ax.set_title(method.replace("_", " "))
        axes[0].set_ylabel("Σ |attribution| per prompt")
        axes[0].legend(fontsize=7, frameon=False)
        fig.suptitle("Attribution magnitude along training")
        fig.tight_layout()
        return save_figure(fig, path, tight=False)


def plot_faithfulness(faithfulness: pd.DataFrame, path: str | Path) -> Path:
    """Deletion test: drop in log p(true) when the top-k attributed characters are
    replaced vs k random ones (95 % bootstrap CI), one panel per model."""
    models = sorted(faithfulness["model"].unique())
    methods = list(dict.fromkeys(faithfulness["method"]))
    with figure_style():
        fig, axes = _panels(len(models))
        for ax, model in zip(axes, models, strict=True):
            m = faithfulness[faithfulness["model"] == model]
            for j, method in enumerate(methods):
                d = m[m["method"] == method].sort_values("k")
                err = [
                    d["drop_top_mean"] - d["drop_top_ci_low"],
                    d["drop_top_ci_high"] - d["drop_top_mean"],
                ]
                ax.errorbar(
                    d["k"],
                    d["drop_top_mean"],
                    yerr=err,
                    color=f"C{j}",
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=f"top-k {method}",
                )
            r = m.groupby("k")["drop_random_mean"].mean()
            ax.plot(r.index, r.to_numpy(), color="#555", ls="--", label="k random (mean)")
            ax.set_xlabel("characters replaced (k)")
            ax.set_title(f"{model} model")
        axes[0].set_ylabel("drop in log p(true) (nats)")
        axes[0].legend(fontsize=7, frameon=False)
        fig.suptitle("Faithfulness: deleting the top-attributed characters vs random ones")
        fig.tight_layout()
        return save_figure(fig, path, tight=False)


def plot_metric_timeline(
    timeline: pd.DataFrame,
    reference: pd.DataFrame,
    metrics: dict[str, str],
    path: str | Path,
    *,
    x: str = "iteration",
) -> Path:
    """Sample measures against ``x`` (iteration or val_loss), one panel per measure and one
    colour per model: the mean over seeds with the min-max band, and the corpus's own
    value (held-out slices as long as a sample) as a dashed line of the same colour.

    ``timeline`` is quality/timeline.csv, ``reference`` quality/reference.csv.
    """
    shown = [m for m in metrics if m in timeline.columns and timeline[m].notna().any()]
    models = list(dict.fromkeys(timeline["model"]))
    cols = min(4, max(len(shown), 1))
    rows = -(-max(len(shown), 1) // cols)
    with figure_style():
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.1 * rows), squeeze=False)
        flat = list(axes.ravel())
        for ax in flat[len(shown) :]:
            ax.set_visible(False)
        for ax, metric in zip(flat, shown, strict=False):
            for i, model in enumerate(models):
                g = timeline[timeline["model"] == model]
                stats = g.groupby("iteration").agg(
                    x=(x, "first"), mean=(metric, "mean"), lo=(metric, "min"), hi=(metric, "max")
                )
                stats = stats.dropna(subset=["x"]).sort_values("x")
                color = f"C{i % 10}"
                ax.plot(
                    stats["x"],
                    stats["mean"],
                    color=color,
                    marker="o",
                    ms=3,
                    lw=1.5,
                    label=str(model),
                )
                ax.fill_between(stats["x"], stats["lo"], stats["hi"], color=color, alpha=0.15, lw=0)
                corpus = g["corpus"].iloc[0]
                ref = reference[(reference["corpus"] == corpus) & (reference["metric"] == metric)]
                if len(ref) and pd.notna(ref["slice_mean"].iloc[0]):
                    ax.axhline(
                        float(ref["slice_mean"].iloc[0]), color=color, ls="--", lw=1, alpha=0.8
                    )
            ax.set_title(metrics[metric], fontsize=9)
            if x == "iteration":
                _iteration_axis(ax, timeline["iteration"])
                ax.set_xlim(left=0)
            else:
                ax.set_xlabel("validation loss (nats/char)")
                ax.invert_xaxis()  # training goes left to right
        if shown:
            flat[0].legend(fontsize=7, frameon=False)
        what = "iteration" if x == "iteration" else "validation loss"
        fig.suptitle(f"What the samples show, against {what} (dashed: the corpus itself)")
        # fixed margins instead of tight_layout: same look for equal panels, half the time
        fig.subplots_adjust(
            left=0.05, right=0.98, bottom=0.3 / rows, top=1 - 0.25 / rows, wspace=0.28, hspace=0.55
        )
        return save_figure(fig, path, tight=False)


def plot_style_shift(groups: pd.DataFrame, path: str | Path) -> Path:
    """Adapted models: style distance (JS, characters) to the target corpus and to the
    source corpus, before and after adaptation, one group of bars per (source → target,
    start). ``groups`` has columns source, target, start, js_target_before/after,
    js_source_before/after."""
    labels = [f"{r.source}→{r.target}\n{r.start}" for r in groups.itertuples()]
    series = [
        ("js_target_before", "to target, before", "#c7c7c7"),
        ("js_target_after", "to target, after", "#1f77b4"),
        ("js_source_before", "to source, before", "#ffbb78"),
        ("js_source_after", "to source, after", "#ff7f0e"),
    ]
    with figure_style():
        fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2), 4.2))
        width = 0.8 / len(series)
        for j, (col, name, color) in enumerate(series):
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(labels))]
            ax.bar(xs, groups[col].to_numpy(), width=width * 0.95, color=color, label=name)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=7, rotation=20, ha="right")
        ax.set_ylabel("JS divergence (bits), lower = closer")
        ax.grid(axis="x", visible=False)
        ax.set_title("Did adaptation move the samples' style to the target?")
        ax.legend(fontsize=7, frameon=False)
        fig.tight_layout()
        return save_figure(fig, path, tight=False)

"""Figures of few-shot adaptation, drawn from the stage's tables (``plot_xxx(table, path) -> Path``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from domaingpt.report.plotting import (
    figure_style,
    report_size,
    save_figure,
    subplots,
)


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
        fig, axes = subplots(
            nrows, ncols, figsize=report_size(4.6 * ncols, 3.6 * nrows), squeeze=False
        )
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
        caption = (
            f"{title}. The {ylabel} against adaptation step, one panel per source → target "
            "pair, one line per start point (final or early checkpoint, or scratch; mean "
            "over seeds, the band from the lowest to the highest seed)"
        )
        return save_figure(fig, path, caption=caption, tight=False)

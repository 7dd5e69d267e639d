"""Figures of the zero-shot loss matrix, drawn from the stage's tables (``plot_xxx(table, path) -> Path``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.patches import Rectangle

from domaingpt.report.plotting import (
    figure_style,
    report_size,
    save_figure,
    subplots,
)


def plot_loss_matrix(
    panels: dict[str, pd.DataFrame], path: str | Path, *, unit: str = "nats / character"
) -> Path:
    """Heatmaps of zero-shot loss matrices (rows = model, columns = corpus), one panel
    per matrix, on one shared colour scale so the panels' patterns compare."""

    values = [float(v) for m in panels.values() for v in m.to_numpy().ravel() if v == v]
    vmin, vmax = (min(values), max(values)) if values else (0.0, 1.0)
    with figure_style():
        widths = [max(m.shape[1], 1) for m in panels.values()]
        fig, axes = subplots(
            1,
            len(panels),
            figsize=report_size(
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
        caption = (
            "Cross-entropy (nats per character) of each model (rows) on each corpus "
            "(columns): this run, and the study's published matrix on the same colour scale"
        )
        return save_figure(fig, path, caption=caption)


def plot_loss_along_training(table: pd.DataFrame, path: str | Path) -> Path:
    """Zero-shot loss against checkpoint iteration: one panel per model, one line per
    corpus, with its confidence band (rows of ``eval/zero_shot.csv``)."""
    models = list(dict.fromkeys(table["model"]))
    corpora = list(dict.fromkeys(table["corpus"]))
    with figure_style():
        fig, axes = subplots(
            1, len(models), figsize=report_size(4.6 * len(models), 3.8), sharey=True, squeeze=False
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
        caption = (
            "Zero-shot loss along training: one panel per model, the loss of its "
            "checkpoints on each corpus (solid: its own corpus) with 95 % confidence bands"
        )
        return save_figure(fig, path, caption=caption, tight=False)


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
        fig, axes = subplots(
            1,
            len(models),
            figsize=report_size(3.6 * max(len(models), 1) + 0.6, 3.8),
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
            Rectangle((0, 0), 1, 1, color="C0"),
            Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="C0", hatch="//"),
        ]
        fig.legend(handles, ["this run (95 % CI)", "the study"], loc="upper right", frameon=False)
        fig.tight_layout(rect=(0, 0, 0.86, 1))
        caption = "Zero-shot loss: this run (with 95 % CI) beside the study's values"
        return save_figure(fig, path, caption=caption, tight=False)

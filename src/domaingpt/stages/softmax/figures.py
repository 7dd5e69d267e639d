"""Figures of softmax inspection, drawn from the stage's tables (``plot_xxx(table, path) -> Path``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from domaingpt.report.plotting import (
    DOMAIN_STYLE,
    figure_style,
    grid,
    iteration_axis,
    panels,
    plain,
    save_figure,
)


def plot_softmax_curves(summary: pd.DataFrame, path: str | Path, value: str = "entropy") -> Path:
    """Mean entropy (or p(true)) against iteration, in- vs out-of-domain, one panel per
    model, with the 95 % CI as a band (``summary`` is softmax/summary.csv)."""
    models = sorted(summary["model"].unique())
    with figure_style():
        fig, axes = panels(len(models))
        for ax, model in zip(axes, models, strict=True):
            m = summary[summary["model"] == model]
            for domain, (color, ls, label) in DOMAIN_STYLE.items():
                d = m[m["domain"] == domain].sort_values("iteration")
                if d.empty:
                    continue
                x = d["iteration"].to_numpy()
                ax.plot(x, d[f"{value}_mean"], color=color, ls=ls, marker="o", ms=3, label=label)
                ax.fill_between(
                    x, d[f"{value}_ci_low"], d[f"{value}_ci_high"], color=color, alpha=0.15, lw=0
                )
            iteration_axis(ax, m["iteration"])
            ax.set_title(f"{model} model")
        axes[0].set_ylabel("entropy (bits)" if value == "entropy" else "p(true next character)")
        axes[0].legend(fontsize=8, frameon=False)
        fig.suptitle(
            "Next-character entropy along training"
            if value == "entropy"
            else "Probability of the true next character along training"
        )
        fig.tight_layout()
        caption = (
            "Entropy (bits) of the next-character distribution"
            if value == "entropy"
            else "Probability of the true next character"
        ) + (
            " along training, one panel per model: in-domain and out-of-domain prompts, "
            "mean with its 95 % confidence band"
        )
        return save_figure(fig, path, caption=caption, tight=False)


def plot_entropy_positions(positions: pd.DataFrame, path: str | Path) -> Path:
    """Heatmap of mean entropy by checkpoint (rows) and position in the prompt (columns),
    one panel per model and domain (``positions`` is softmax/positions.csv)."""
    df = positions[positions["domain"].isin(["in", "out"])].copy()
    df["weighted"] = df["mean_entropy_bits"] * df["n"]
    g = df.groupby(["model", "domain", "iteration", "position"], sort=True)[["weighted", "n"]].sum()
    g = (g["weighted"] / g["n"]).rename("entropy").reset_index()
    models = sorted(g["model"].unique())
    domains = [d for d in ("in", "out") if d in set(g["domain"])]
    vmin, vmax = (float(g["entropy"].min()), float(g["entropy"].max())) if len(g) else (0, 1)
    with figure_style():
        fig, axes = grid(len(models), len(domains), (5.2, 2.6), 0.6, layout="constrained")
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
                ax.set_yticklabels([str(i) for i in table.index], fontsize="small")
                ax.set_ylabel("iteration")
                if r == len(models) - 1:
                    ax.set_xlabel("position in prompt")
                ax.grid(False)
                ax.set_title(f"{model} model, {DOMAIN_STYLE[domain][2]}", fontsize=10)
        if image is not None:
            fig.colorbar(image, ax=axes, label="mean entropy (bits)", shrink=0.8)
        fig.suptitle("Entropy of the next-character distribution at each position")
        caption = (
            "Mean entropy (bits) of the next-character distribution by checkpoint (rows) and "
            "position in the prompt (columns), one panel per model and prompt domain"
        )
        return save_figure(fig, path, caption=caption, tight=False)


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
    true next character is orange. ``topk`` is softmax/topk.csv filtered to one model."""

    ids = list(dict.fromkeys(topk["prompt_id"]))
    iters = sorted(topk["iteration"].unique())
    iters = [i for i in iters if i > 0] or iters  # iteration 0 is uniform: nothing to see
    if len(iters) > max_iterations:
        pick = np.unique(np.linspace(0, len(iters) - 1, max_iterations).round().astype(int))
        iters = [iters[i] for i in pick]
    by_id = prompts.set_index("prompt_id")
    with figure_style():
        fig, axes = grid(len(ids), len(iters), (2.9, 1.9), 0.5, sharex=True)
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
                ax.set_yticklabels([plain(s) for s in d["label"]], fontsize=8)
                ax.set_xlim(0, 1)
                ax.grid(axis="y", visible=False)
                if r == 0:
                    ax.set_title(f"iteration {it}", fontsize=9)
                if c == 0:
                    ax.set_ylabel(
                        f"…{plain(tail)}\n→ {plain(p['target_label'])} ({p['corpus']})",
                        fontsize="small",
                        rotation=0,
                        ha="right",
                        va="center",
                    )
            for ax in axes[-1]:
                ax.set_xlabel("probability")
        fig.suptitle(plain(title or "Top-k next characters"))
        fig.tight_layout()
        caption = (
            f"{title or 'Top-k next characters'}. The most probable next characters (bars) of a "
            "few prompts (rows) at a few checkpoints (columns); the true next character in orange"
        )
        return save_figure(fig, path, caption=caption, tight=True)

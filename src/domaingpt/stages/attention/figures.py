"""The attention stage's figures, drawn from its ``heads`` table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from domaingpt.context.activations import WORD_GROUPS
from domaingpt.context.rundir import study_order
from domaingpt.report.plotting import figure_style, grid, iteration_axis, save_figure


def _final_in(heads: pd.DataFrame) -> pd.DataFrame:
    last = heads["iteration"] == heads.groupby("model")["iteration"].transform("max")
    return heads[last & (heads["domain"] == "in")]


def plot_heads(heads: pd.DataFrame, path: Path) -> Path:
    """Where each head looks at the final checkpoint (in-domain prompts): its share of
    attention on each word group divided by uniform attention's (1 = chance), a panel
    per model, a row per head."""
    final = _final_in(heads)
    models = study_order(final["model"].unique())
    with figure_style():
        n_heads = max(len(final[final["model"] == m]) for m in models) if models else 1
        fig, axes = grid(1, len(models), (3.4, 0.32 * n_heads + 1.2), 0.6, layout="constrained")
        image = None
        for ax, model in zip(axes[0], models, strict=False):
            m = final[final["model"] == model].sort_values(["layer", "head"])
            lift = np.stack(
                [
                    m[f"share_{g}"].to_numpy() / np.maximum(m[f"chance_{g}"].to_numpy(), 1e-12)
                    for g in WORD_GROUPS
                ],
                1,
            )
            image = ax.imshow(
                np.log2(np.clip(lift, 1 / 16, 16)), cmap="RdBu_r", vmin=-4, vmax=4, aspect="auto"
            )
            ax.set_xticks(range(len(WORD_GROUPS)))
            ax.set_xticklabels([g.replace("_", " ") for g in WORD_GROUPS], rotation=30, ha="right")
            ax.set_yticks(range(len(m)))
            ax.set_yticklabels([f"L{int(r.layer)} h{int(r.head)}" for r in m.itertuples()])
            ax.set_title(f"{model} model", fontsize=10)
            ax.grid(False)
            for (i, j), v in np.ndenumerate(lift):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize="small")
        if image is not None:
            fig.colorbar(image, ax=list(axes[0]), label="log2(share / chance)", shrink=0.8)
        fig.suptitle("Where each head looks (final checkpoint, in-domain; 1 = uniform attention)")
        caption = (
            "Where each attention head looks at the final checkpoint on in-domain prompts: "
            "one panel per model, one row per layer and head, each measure relative to "
            "uniform attention (1)"
        )
        return save_figure(fig, path, caption=caption, tight=False)


def plot_training(heads: pd.DataFrame, path: Path) -> Path:
    """Along training (in-domain): attention entropy (top) and the previous word's share
    over chance (bottom), mean over each layer's heads; a column per model."""
    d = heads[heads["domain"] == "in"]
    models = study_order(d["model"].unique())
    with figure_style():
        fig, axes = grid(2, len(models), (3.6, 2.6), 0.8, layout="constrained", sharex="col")
        for c, model in enumerate(models):
            m = d[d["model"] == model]
            by = m.groupby(["layer", "iteration"])[
                ["entropy_bits", "share_previous_word", "chance_previous_word"]
            ].mean()
            for layer in sorted(m["layer"].unique()):
                g = by.loc[layer]
                axes[0][c].plot(
                    g.index,
                    g["entropy_bits"],
                    marker="o",
                    ms=3,
                    color=f"C{layer}",
                    label=f"layer {int(layer)}",
                )
                axes[1][c].plot(
                    g.index,
                    g["share_previous_word"] / g["chance_previous_word"],
                    marker="o",
                    ms=3,
                    color=f"C{layer}",
                )
            axes[1][c].axhline(1.0, color="grey", lw=0.8, ls=":")
            iteration_axis(axes[1][c], m["iteration"])
            axes[0][c].set_title(f"{model} model", fontsize=10)
        axes[0][0].set_ylabel("attention entropy (bits)")
        axes[1][0].set_ylabel("previous word: share / chance")
        axes[0][-1].legend(fontsize="small", frameon=False)
        fig.suptitle("Attention along training (in-domain prompts, mean over each layer's heads)")
        caption = (
            "Attention entropy and the weight on the previous word along training, on "
            "in-domain prompts: one column per model, one line per layer (mean over its heads)"
        )
        return save_figure(fig, path, caption=caption, tight=False)

"""The lens stage's figures, drawn from its tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps

from domaingpt.context.rundir import study_order
from domaingpt.report.plotting import DOMAIN_STYLE, figure_style, grid, iteration_axis, save_figure


def plot_lens_layers(layers: pd.DataFrame, path: Path) -> Path:
    """Lens loss (top) and KL to the final prediction (bottom) against layer: a column
    per model, a line per checkpoint (darker = later), in-domain solid, out dashed."""
    models = study_order(layers["model"].unique())
    with figure_style():
        fig, axes = grid(2, len(models), (3.8, 2.8), 0.8, layout="constrained", sharex=True)
        for c, model in enumerate(models):
            m = layers[layers["model"] == model]
            its = sorted(m["iteration"].unique())
            colours = colormaps["viridis"](np.linspace(0.9, 0.1, len(its)))
            for k, it in enumerate(its):
                for domain in ("in", "out"):
                    d = m[(m["iteration"] == it) & (m["domain"] == domain)].sort_values("layer")
                    if d.empty:
                        continue
                    style = DOMAIN_STYLE[domain][1]
                    label = f"iteration {it}" if domain == "in" else None
                    for r, metric in enumerate(("loss_nats", "kl_bits")):
                        axes[r][c].plot(
                            d["layer"],
                            d[metric],
                            style,
                            color=colours[k],
                            marker="o",
                            ms=2.5,
                            label=label if r == 0 else None,
                        )
            axes[0][c].set_title(f"{model} model", fontsize=10)
            axes[1][c].set_xlabel("layer (0 = embeddings)")
            axes[1][c].set_xticks(sorted(m["layer"].unique()))
        axes[0][0].set_ylabel("lens loss (nats)")
        axes[1][0].set_ylabel("KL(final ‖ layer) (bits)")
        axes[0][-1].legend(fontsize="small", frameon=False)
        fig.suptitle("The logit lens along training (solid: in-domain prompts, dashed: out)")
        caption = "Lens loss and KL to the final prediction, layer by layer, along training"
        return save_figure(fig, path, caption=caption, tight=False)


def plot_formation(formation: pd.DataFrame, path: Path) -> Path:
    """Formation depth against iteration, a panel per model, in- and out-of-domain with
    their 95 % intervals."""
    models = study_order(formation["model"].unique())
    layers = int(formation["layers"].max()) if len(formation) else 1
    with figure_style():
        fig, axes = grid(1, len(models), (3.8, 3.0), 0.6, layout="constrained", sharey=True)
        for ax, model in zip(axes[0], models, strict=True):
            m = formation[formation["model"] == model]
            for domain in ("in", "out"):
                d = m[m["domain"] == domain].sort_values("iteration")
                if d.empty:
                    continue
                colour, style, label = DOMAIN_STYLE[domain]
                ax.plot(
                    d["iteration"], d["depth"], style, color=colour, marker="o", ms=3, label=label
                )
                ax.fill_between(
                    d["iteration"], d["depth_low"], d["depth_high"], color=colour, alpha=0.2, lw=0
                )
            iteration_axis(ax, m["iteration"])
            ax.set_ylim(-0.1, layers + 0.1)
            ax.set_title(f"{model} model", fontsize=10)
        axes[0][0].set_ylabel("formation depth (layers)")
        axes[0][-1].legend(fontsize=8, frameon=False)
        fig.suptitle("At which depth the prediction forms, along training")
        caption = "At which depth the prediction forms, along training, one panel per model"
        return save_figure(fig, path, caption=caption, tight=False)

"""The stage's figure, drawn from its table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from domaingpt.core.plotting import DOMAIN_STYLE, figure_style, grid, iteration_axis, save_figure


def plot_distance(table: pd.DataFrame, path: Path) -> Path:
    """Mean attention distance against iteration: a panel per model (rows) and layer
    (columns), a colour per head; in-domain prompts solid, out-of-domain dashed."""
    by_domain = (
        table.groupby(["model", "layer", "head", "domain", "iteration"], sort=True)["mean_distance"]
        .mean()
        .reset_index()
    )
    models = list(dict.fromkeys(table["model"]))
    layers = sorted(table["layer"].unique())
    uniform = (float(table["length"].max()) - 1) / 4 if len(table) else 0.0
    with figure_style():
        fig, axes = grid(len(models), len(layers), (3.6, 2.6), 0.6, layout="constrained")
        for r, model in enumerate(models):
            for c, layer in enumerate(layers):
                ax = axes[r][c]
                m = by_domain[(by_domain["model"] == model) & (by_domain["layer"] == layer)]
                for head in sorted(m["head"].unique()):
                    for domain in ("in", "out"):
                        d = m[(m["head"] == head) & (m["domain"] == domain)]
                        if d.empty:
                            continue
                        ax.plot(
                            d["iteration"],
                            d["mean_distance"],
                            color=f"C{head}",
                            ls=DOMAIN_STYLE[domain][1],
                            marker="o",
                            ms=2.5,
                            label=f"head {head}, {DOMAIN_STYLE[domain][2]}",
                        )
                ax.axhline(uniform, color="grey", lw=0.8, ls=":")
                iteration_axis(ax, m["iteration"])
                ax.set_title(f"{model} model, layer {layer}", fontsize=10)
                if c == 0:
                    ax.set_ylabel("mean distance (characters)")
        axes[0][0].legend(fontsize=7, frameon=False)
        fig.suptitle("How far back attention looks along training (dotted: uniform attention)")
        return save_figure(fig, path, tight=False)

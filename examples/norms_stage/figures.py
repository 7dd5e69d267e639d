"""The stage's figure, drawn from its table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from domaingpt import api


def plot_norms(table: pd.DataFrame, path: Path) -> Path:
    """Mean residual-stream norm against iteration: a panel per model, a colour per layer;
    in-domain prompts solid, out-of-domain dashed."""
    by_domain = (
        table.groupby(["model", "layer", "domain", "iteration"], sort=True)["mean_norm"]
        .mean()
        .reset_index()
    )
    models = list(dict.fromkeys(table["model"]))
    with api.figure_style():
        fig, axes = api.grid(1, len(models), (3.8, 3.0), 0.6, layout="constrained")
        for ax, model in zip(axes[0], models, strict=True):
            m = by_domain[by_domain["model"] == model]
            for layer in sorted(m["layer"].unique()):
                for domain in ("in", "out"):
                    d = m[(m["layer"] == layer) & (m["domain"] == domain)]
                    if d.empty:
                        continue
                    name = "embeddings" if layer == 0 else f"layer {layer}"
                    ax.plot(
                        d["iteration"],
                        d["mean_norm"],
                        color=f"C{layer}",
                        ls=api.DOMAIN_STYLE[domain][1],
                        marker="o",
                        ms=2.5,
                        label=f"{name}, {api.DOMAIN_STYLE[domain][2]}",
                    )
            api.iteration_axis(ax, m["iteration"])
            ax.set_title(f"{model} model", fontsize=10)
        axes[0][0].set_ylabel("mean ‖residual stream‖₂")
        axes[0][0].legend(fontsize=7, frameon=False)
        fig.suptitle("How large the residual stream grows along training, layer by layer")
        caption = "Residual-stream norm along training, per layer"
        return api.save_figure(fig, path, caption=caption, tight=False)

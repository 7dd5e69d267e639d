"""The similarity stage's figures, drawn from its ``cka`` table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from domaingpt.context.rundir import study_order
from domaingpt.report.plotting import figure_style, grid, iteration_axis, save_figure


def plot_training(cka: pd.DataFrame, path: Path) -> Path:
    """CKA of consecutive checkpoints against the later one's iteration: a panel per
    model, a line per layer with its 95 % jackknife interval."""
    t = cka[cka["kind"] == "training"]
    models = study_order(t["model_a"].unique())
    with figure_style():
        fig, axes = grid(1, len(models), (3.8, 3.0), 0.6, layout="constrained", sharey=True)
        for ax, model in zip(axes[0], models, strict=False):
            m = t[t["model_a"] == model]
            for layer in sorted(m["layer"].unique()):
                d = m[m["layer"] == layer].sort_values("iteration_b")
                colour = f"C{int(layer)}"
                label = "embeddings" if layer == 0 else f"layer {int(layer)}"
                ax.plot(d["iteration_b"], d["cka"], color=colour, marker="o", ms=3, label=label)
                ax.fill_between(
                    d["iteration_b"], d["ci_low"], d["ci_high"], color=colour, alpha=0.15, lw=0
                )
            iteration_axis(ax, m["iteration_b"])
            ax.set_title(f"{model} model", fontsize=10)
        axes[0][0].set_ylabel("CKA with the previous checkpoint")
        axes[0][-1].legend(fontsize=8, frameon=False)
        fig.suptitle("Do the representations harden? CKA of consecutive checkpoints")
        caption = (
            "CKA of consecutive checkpoints along training, one panel per model, one line "
            "per layer (1: the representation no longer changes)"
        )
        return save_figure(fig, path, caption=caption, tight=False)


def plot_across(cka: pd.DataFrame, path: Path) -> Path:
    """CKA against layer: one panel for the domain models against each other, then one
    per adapted pair (source at its start vs adapted, target prompts), early and final
    starts (mean over seeds)."""
    domains = cka[cka["kind"] == "domains"]
    adapt = cka[(cka["kind"] == "adaptation") & (cka["prompts"] == "target")]
    pairs = list(dict.fromkeys(zip(adapt["source"], adapt["target"], strict=True)))
    n = (not domains.empty) + len(pairs)
    with figure_style():
        fig, axes = grid(1, max(n, 1), (3.4, 3.0), 0.6, layout="constrained", sharey=True)
        panels = iter(axes[0])
        if not domains.empty:
            ax = next(panels)
            for k, (pair, d) in enumerate(domains.groupby(["model_a", "model_b"], sort=False)):
                d = d.sort_values("layer")
                ax.errorbar(
                    d["layer"],
                    d["cka"],
                    yerr=[d["cka"] - d["ci_low"], d["ci_high"] - d["cka"]],
                    color=f"C{k}",
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=f"{pair[0]} vs {pair[1]}",
                )
            ax.set_title("domain models (final)", fontsize=10)
            ax.legend(fontsize="small", frameon=False)
        for source, target in pairs:
            ax = next(panels)
            p = adapt[(adapt["source"] == source) & (adapt["target"] == target)]
            for k, (start, d) in enumerate(p.groupby("start", sort=True)):
                mean = d.groupby("layer")[["cka", "ci_low", "ci_high"]].mean()
                ax.errorbar(
                    mean.index,
                    mean["cka"],
                    yerr=[mean["cka"] - mean["ci_low"], mean["ci_high"] - mean["cka"]],
                    color=f"C{k + 3}",
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=f"{start} start",
                )
            ax.set_title(f"{source} → {target} (on {target})", fontsize=10)
            ax.legend(fontsize="small", frameon=False)
        layers = sorted(cka["layer"].unique())
        for ax in axes[0]:
            ax.set_xlabel("layer (0 = embeddings)")
            ax.set_xticks(layers)
        axes[0][0].set_ylabel("linear CKA (debiased)")
        fig.suptitle("How alike: domain models, and each source model before and after adapting")
        caption = (
            "CKA by layer: the domain models with each other; each model before vs after adapting"
        )
        return save_figure(fig, path, caption=caption, tight=False)

"""Figures of attributions, drawn from the stage's tables (``plot_xxx(table, path) -> Path``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from domaingpt.data.charclass import CLASSES
from domaingpt.report.plotting import (
    figure_style,
    iteration_axis,
    panels,
    save_figure,
)

_GROUP_ORDER = {
    "char_class": list(CLASSES),
    "relpos": ["current_word", "boundary", "previous_word", "further_back"],
}


def plot_saliency_groups(table: pd.DataFrame, by: str, path: str | Path, title: str) -> Path:
    """Lift (mean share relative to the prompt's average; 1 = average) of each group, bars
    per model, one panel per method; in-domain prompts at each model's last checkpoint."""

    last = table.groupby("model")["iteration"].transform("max") == table["iteration"]
    df = table[last & (table["domain"] == "in")]
    if df.empty:
        df = table[last]
    methods = list(dict.fromkeys(df["method"]))
    models = sorted(df["model"].unique())
    groups = [g for g in _GROUP_ORDER.get(by, sorted(df[by].unique())) if g in set(df[by])]
    with figure_style():
        fig, axes = panels(len(methods), width=5.6, height=3.6)
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
        caption = (
            f"{title}: the lift of each group (its mean attribution share relative to the "
            "prompt's average; 1 = average), one panel per attribution method, one bar per "
            "model (in-domain prompts, last checkpoint)"
        )
        return save_figure(fig, path, caption=caption, tight=False)


def plot_saliency_checkpoints(by_checkpoint: pd.DataFrame, path: str | Path) -> Path:
    """Mean total attribution magnitude per prompt against iteration, one panel per
    method, one colour per model, solid in-domain and dashed out-of-domain."""
    methods = list(dict.fromkeys(by_checkpoint["method"]))
    models = sorted(by_checkpoint["model"].unique())
    with figure_style():
        fig, axes = panels(len(methods))
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
            iteration_axis(ax, m["iteration"])
            ax.set_title(method.replace("_", " "))
        axes[0].set_ylabel("Σ |attribution| per prompt")
        axes[0].legend(fontsize="small", frameon=False)
        fig.suptitle("Attribution magnitude along training")
        fig.tight_layout()
        caption = (
            "Attribution magnitude along training: the mean total attribution per prompt, one "
            "panel per method, one colour per model (solid: in-domain prompts, dashed: out)"
        )
        return save_figure(fig, path, caption=caption, tight=False)


def plot_faithfulness(faithfulness: pd.DataFrame, path: str | Path) -> Path:
    """Deletion test: drop in log p(true) when the top-k attributed characters are
    replaced vs k random ones (95 % bootstrap CI), one panel per model."""
    models = sorted(faithfulness["model"].unique())
    methods = list(dict.fromkeys(faithfulness["method"]))
    with figure_style():
        fig, axes = panels(len(models))
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
        axes[0].legend(fontsize="small", frameon=False)
        fig.suptitle("Faithfulness: deleting the top-attributed characters vs random ones")
        fig.tight_layout()
        caption = (
            "Faithfulness: the drop in log p(true next character) when the k top-attributed "
            "characters are replaced (one line per method, 95 % bootstrap CI) against k "
            "random ones (dashed), one panel per model"
        )
        return save_figure(fig, path, caption=caption, tight=False)


def plot_agreement(agreement: pd.DataFrame, path: str | Path) -> Path:
    """Spearman correlation of each gradient method with occlusion against iteration
    (in-domain prompts, 95 % CI): a panel per model, a colour per method, solid for the
    ``<unk>`` baseline and dashed for a space."""
    d = agreement[agreement["domain"] == "in"]
    models = sorted(d["model"].unique())
    methods = list(dict.fromkeys(d["method"]))
    with figure_style():
        fig, axes = panels(len(models))
        for ax, model in zip(axes, models, strict=True):
            m = d[d["model"] == model]
            for j, method in enumerate(methods):
                for baseline, ls in (("unk", "-"), ("space", "--")):
                    r = m[(m["method"] == method) & (m["baseline"] == baseline)]
                    r = r.sort_values("iteration")
                    if r.empty:
                        continue
                    ax.errorbar(
                        r["iteration"],
                        r["spearman"],
                        yerr=[r["spearman"] - r["ci_low"], r["ci_high"] - r["spearman"]],
                        color=f"C{j}",
                        ls=ls,
                        marker="o",
                        ms=3,
                        capsize=2,
                        label=f"{method} ({baseline})",
                    )
            ax.axhline(0.0, color="#555", lw=0.8)
            iteration_axis(ax, m["iteration"])
            ax.set_title(f"{model} model")
        axes[0].set_ylabel("Spearman ρ with occlusion")
        axes[0].legend(fontsize="small", frameon=False)
        fig.suptitle("Do gradient attributions rank characters as occlusion does?")
        fig.tight_layout()
        caption = (
            "Spearman correlation of each gradient attribution method with occlusion along "
            "training (in-domain prompts, 95 % CI), one panel per model; occlusion by <unk> "
            "solid, by a space dashed"
        )
        return save_figure(fig, path, caption=caption, tight=False)

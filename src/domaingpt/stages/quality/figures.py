"""Figures of sample quality, drawn from the stage's tables (``plot_xxx(table, path) -> Path``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from domaingpt.report.plotting import (
    figure_style,
    iteration_axis,
    report_size,
    save_figure,
    subplots,
)
from domaingpt.stages.quality.milestones import adapt_groups

#: Measures drawn in the timeline figures, with a readable label.
FIGURE_METRICS: dict[str, str] = {
    "space_share": "share of spaces",
    "newline_share": "share of newlines",
    "heading_share": "speaker-heading lines",
    "long_word_known": "long words (≥4) that are real",
    "word_known": "words that are real",
    "mean_word_len": "mean word length",
    "distinct_char_4": "distinct 4-grams (chars)",
    "longest_repeat": "longest repeat (chars)",
    "zlib_ratio": "zlib ratio (lower = repetitive)",
    "js_unigram": "JS distance to corpus (chars)",
    "js_class": "JS distance to corpus (classes)",
}


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
        fig, axes = subplots(rows, cols, figsize=report_size(4.2 * cols, 3.1 * rows), squeeze=False)
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
                iteration_axis(ax, timeline["iteration"])
                ax.set_xlim(left=0)
            else:
                ax.set_xlabel("validation loss (nats/char)")
                ax.invert_xaxis()  # training goes left to right
        if shown:
            flat[0].legend(fontsize="small", frameon=False)
        what = "iteration" if x == "iteration" else "validation loss"
        fig.suptitle(f"What the samples show, against {what} (dashed: the corpus itself)")
        # fixed margins instead of tight_layout: same look for equal panels, half the time
        fig.subplots_adjust(
            left=0.05, right=0.98, bottom=0.3 / rows, top=1 - 0.25 / rows, wspace=0.28, hspace=0.55
        )
        caption = (
            f"What the samples show against {what}: one panel per sample measure, one colour "
            "per model (mean over seeds, min-max band), the corpus's own value dashed"
        )
        return save_figure(fig, path, caption=caption, tight=False)


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
        fig, ax = subplots(figsize=report_size(max(6.0, 1.1 * len(labels) + 2), 4.2))
        width = 0.8 / len(series)
        for j, (col, name, color) in enumerate(series):
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(labels))]
            ax.bar(xs, groups[col].to_numpy(), width=width * 0.95, color=color, label=name)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize="small", rotation=20, ha="right")
        ax.set_ylabel("JS divergence (bits), lower = closer")
        ax.grid(axis="x", visible=False)
        ax.set_title("Did adaptation move the samples' style to the target?")
        ax.legend(fontsize="small", frameon=False)
        fig.tight_layout()
        caption = (
            "Did adaptation move the samples' style to the target? JS divergence of the samples' "
            "characters to the target and to the source corpus, before and after adapting"
        )
        return save_figure(fig, path, caption=caption, tight=False)


def draw(tables: dict[str, pd.DataFrame], out: Path) -> dict[str, Path]:
    """The stage's figures from its tables: the timelines against iteration and val loss,
    and the style shift of the adapted models (removed when there are none)."""
    written = {}
    timeline = tables["timeline"]
    if not timeline.empty:
        for x, name in (("iteration", "timeline_iteration"), ("val_loss", "timeline_val_loss")):
            written[name] = plot_metric_timeline(
                timeline, tables["reference"], FIGURE_METRICS, out / f"{name}.png", x=x
            )
    adapted = tables.get("adapted", pd.DataFrame())
    if not adapted.empty:
        written["adapted_style"] = plot_style_shift(
            adapt_groups(adapted), out / "adapted_style.png"
        )
    else:
        (out / "adapted_style.png").unlink(missing_ok=True)
    return written

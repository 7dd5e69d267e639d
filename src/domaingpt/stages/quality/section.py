"""The report's section on what the samples show."""

from __future__ import annotations

from domaingpt.context.stage import StageView
from domaingpt.report.document import Section, figures_and_heatmap
from domaingpt.report.format import by_model_and_iteration


def section(view: StageView) -> Section:
    """The measures along training, and the figures."""
    s = Section("quality", view.stage.heading)
    tables = view.tables or {}
    s.p(
        "What the samples show, measured: the share of generated words (of 4 letters or "
        "more) that occur in the corpus, the share of spaces, repetitiveness (zlib ratio, "
        "distinct 4-grams) and the nearest corpus in style, along training and after "
        "adaptation."
    )
    tl = tables.get("timeline")
    if tl is not None and not tl.empty:
        cols = [
            c
            for c in ("val_loss", "long_word_known", "space_share", "distinct_char_4", "zlib_ratio")
            if c in tl.columns
        ]
        means = tl.groupby(["model", "iteration"], sort=False)[cols].mean().reset_index()
        s.table(
            by_model_and_iteration(means, view.corpora),
            "Along training: mean over the samples of each checkpoint",
            "quality/timeline.csv",
        )
    figures_and_heatmap(s, view.out)
    s.note("The study's judgements of its samples are checked in the Conclusions.")
    return s

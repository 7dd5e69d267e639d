"""The evaluate stage's run: score, write the tables and figures; its tables read back."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from domaingpt.context.stage import Results, StageContext
from domaingpt.core.io import atomic_write_text
from domaingpt.stages.evaluate.compute import (
    final_matrix,
    study_matrix,
    zero_shot_markdown,
    zero_shot_table,
)
from domaingpt.stages.evaluate.figures import plot_loss_along_training, plot_loss_matrix
from domaingpt.stages.evaluate.settings import EvaluateSettings


def run(ctx: StageContext, settings: EvaluateSettings) -> dict[str, Path]:
    """Score every (model checkpoint, corpus) pair and write the stage's folder.

    Files: ``zero_shot.csv`` (tidy), ``zero_shot.md`` (the matrix, with the study's),
    ``zero_shot.png`` (heatmap), ``zero_shot_training.png`` (when several checkpoints of
    a model were scored). Each is written atomically.
    """
    run, log = ctx.run, ctx.log
    run.check_writable()
    table = zero_shot_table(run, settings, progress=ctx.progress, log=log, ranks=ctx.ranks)
    out = ctx.out
    written = {
        "zero_shot_csv": ctx.write_table("zero_shot", table),
        "zero_shot_md": atomic_write_text(
            out / "zero_shot.md", zero_shot_markdown(table, settings)
        ),
    }
    matrix = final_matrix(table)
    panels = {"this run": matrix}
    ref = study_matrix()
    shared_rows = [m for m in matrix.index if m in ref.index]
    shared_cols = [c for c in matrix.columns if c in ref.columns]
    if shared_rows and shared_cols:
        panels["the study (far larger models, for reference)"] = ref.loc[shared_rows, shared_cols]
    written["zero_shot_png"] = plot_loss_matrix(panels, out / "zero_shot.png")
    if table.groupby("model")["iteration"].nunique().max() > 1:
        written["zero_shot_training_png"] = plot_loss_along_training(
            table, out / "zero_shot_training.png"
        )
    for model in matrix.index:
        cells = ", ".join(f"{c} {matrix.loc[model, c]:.4f}" for c in matrix.columns)
        log(f"{model}: {cells}")
    log(f"wrote {len(written)} files to {out}")
    return written


def load(results: Results) -> dict[str, pd.DataFrame]:
    """``zero_shot`` (tidy) and ``matrix`` (final checkpoints, models × corpora)."""
    table = results.table("zero_shot")
    return {"zero_shot": table, "matrix": final_matrix(table)}

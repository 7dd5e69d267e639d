"""The similarity stage's run: compute, write the tables and figures; and its tables read back."""

from __future__ import annotations

from pathlib import Path

from domaingpt.context.activations import prepare
from domaingpt.context.prompts import tokenizations
from domaingpt.context.stage import StageContext
from domaingpt.stages.similarity.compute import (
    SimilaritySettings,
    _compare,
    _Comparisons,
    hardening,
)
from domaingpt.stages.similarity.figures import plot_across, plot_training


def run(ctx: StageContext, settings: SimilaritySettings) -> dict[str, Path]:
    """Every comparison (see the module docstring); write ``similarity/``."""
    ready = prepare(ctx.run, settings, ctx.log, ctx.activations)
    got = _Comparisons(settings.workers)
    _compare(ctx.run, ready, settings, got, ctx.log, ctx.ranks)
    cka, jack = got.tables()
    tables = {"cka": cka, "jackknife": jack, "hardening": hardening(cka, settings.harden_at)}
    out = ctx.out
    paths = {name: ctx.write_table(name, df) for name, df in tables.items()}
    paths["training_png"] = plot_training(cka, out / "training.png")
    if (cka["kind"] != "training").any():
        paths["across_png"] = plot_across(cka, out / "across.png")
    ctx.log(
        f"similarity: {len(ready.models)} model(s), {ready.n_prompts} prompts"
        f"{tokenizations(ready.groups)}, "
        f"{cka['comparison'].nunique()} comparisons; wrote {out}"
    )
    return paths

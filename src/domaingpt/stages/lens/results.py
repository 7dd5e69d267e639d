"""The lens stage's run: compute, write the tables and figures; and its tables read back."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd

from domaingpt.context.activations import prepare
from domaingpt.context.prompts import tokenizations
from domaingpt.context.stage import Results, StageContext, Tables
from domaingpt.core.distributed import map_ranks
from domaingpt.stages.lens.compute import (
    LensSettings,
    _model_frames,
    formation_summary,
    layer_summary,
)
from domaingpt.stages.lens.figures import plot_formation, plot_lens_layers


def run(ctx: StageContext, settings: LensSettings) -> dict[str, Path]:
    """Read every history checkpoint of every model through the lens; write ``lens/``.
    Under torchrun each model is a job on its own rank (:func:`map_ranks`)."""
    ready = prepare(ctx.run, settings, ctx.log, ctx.activations)
    parts = map_ranks(
        partial(_model_frames, ready=ready, settings=settings),
        ready.models,
        ranks=ctx.ranks,
        log=ctx.log,
        with_job=True,
    )
    per_prompt = pd.concat(parts, ignore_index=True)
    tables = {
        "per_prompt": per_prompt,
        "layers": layer_summary(per_prompt),
        "formation": formation_summary(per_prompt, settings.formation_kl_bits),
    }
    out = ctx.out
    paths = {name: ctx.write_table(name, df) for name, df in tables.items()}
    paths["layers_png"] = plot_lens_layers(tables["layers"], out / "layers.png")
    paths["formation_png"] = plot_formation(tables["formation"], out / "formation.png")
    ctx.log(
        f"lens: {len(ready.models)} model(s), {ready.n_prompts} prompts"
        f"{tokenizations(ready.groups)}, "
        f"{per_prompt['iteration'].nunique()} checkpoint iteration(s); wrote {out}"
    )
    return paths


def load(results: Results) -> Tables:
    """The tables :func:`run` wrote: ``per_prompt``, ``layers`` and ``formation``. A
    formation table without its threshold was written under the earlier definition of
    the depth (normalised by the embeddings' KL): it is recomputed from ``per_prompt``
    with the default threshold, so an old run reads as a new one."""
    tables = results.tables()
    if "threshold_bits" not in tables["formation"]:
        tables["formation"] = formation_summary(tables["per_prompt"])
    return tables

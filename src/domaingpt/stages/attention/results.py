"""The attention stage's run: compute, write the tables and figures; and its tables read back."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pandas as pd

from domaingpt.context.activations import prepare
from domaingpt.context.prompts import tokenizations
from domaingpt.context.stage import StageContext
from domaingpt.core.distributed import map_ranks
from domaingpt.stages.attention.compute import (
    AttentionSettings,
    _model_frames,
    head_summary,
)
from domaingpt.stages.attention.figures import plot_heads, plot_training


def run(ctx: StageContext, settings: AttentionSettings) -> dict[str, Path]:
    """Measure every history checkpoint of every model; write ``attention/``. Under
    torchrun each model is a job on its own rank (:func:`map_ranks`)."""
    ready = prepare(ctx.run, settings, ctx.log, ctx.activations)
    parts = map_ranks(
        partial(_model_frames, ready=ready, settings=settings),
        ready.models,
        ranks=ctx.ranks,
        log=ctx.log,
        with_job=True,
    )
    # each vocabulary's prompts once (the models of one read the same prompt ids)
    prompts = pd.concat([p for _, p in parts], ignore_index=True).drop_duplicates("prompt_id")
    per_prompt = pd.concat([frames for frames, _ in parts], ignore_index=True)
    tables = {
        "per_prompt": per_prompt,
        "heads": head_summary(per_prompt, prompts),
        "prompts": prompts,
    }
    out = ctx.out
    paths = {name: ctx.write_table(name, df) for name, df in tables.items()}
    paths["heads_png"] = plot_heads(tables["heads"], out / "heads.png")
    paths["training_png"] = plot_training(tables["heads"], out / "training.png")
    ctx.log(
        f"attention: {len(ready.models)} model(s), {ready.n_prompts} prompts"
        f"{tokenizations(ready.groups)}; wrote {out}"
    )
    return paths

"""The logit lens along training: the tables of every model, history checkpoint, prompt
and layer, from the shared per-checkpoint forward pass (:mod:`domaingpt.model.internals`).

Layer 0 is the embeddings, layer ``ℓ`` the output of block ``ℓ``; at the last layer the
lens is the model's own prediction. Per prompt (averaged over its positions): loss of the
true next character (nats), entropy (bits), p(true), KL(final ‖ layer) in bits and the
share of positions whose top-1 character is already the final one.

**Formation depth** (per prompt): ``D = Σ_{ℓ<L} min(1, KL_ℓ / KL_0)`` layers, the area
under the normalised KL-to-final curve. A prediction formed at once by block ``k`` (KL
at its full value before, 0 from block ``k`` on) has ``D = k``; ``D = 1`` means the first
block already forms it, ``D = L`` that only the last does. Undefined (NaN) when the
embeddings' reading already is the final prediction (``KL_0 = 0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from domaingpt.core.distributed import map_ranks
from domaingpt.core.io import write_json
from domaingpt.core.rundir import ModelEntry, RunDir
from domaingpt.core.stage import StageContext, Tables
from domaingpt.core.statistics import mean_ci
from domaingpt.core.tables import read_table, round_significant, write_table
from domaingpt.data.prompts import PromptSet, domain_of
from domaingpt.errors import DomainGPTError
from domaingpt.model.internals import Internals, InternalsSettings, Prepared, prepare
from domaingpt.stages.lens.figures import plot_formation, plot_lens_layers

METRICS = ("loss_nats", "entropy_bits", "p_true", "kl_bits", "top1_agreement")
PER_PROMPT = [
    "model",
    "iteration",
    "prompt_id",
    "prompt_corpus",
    "domain",
    "layer",
    *METRICS,
]
TABLES = ("per_prompt", "layers", "formation")


@dataclass(frozen=True)
class LensSettings(InternalsSettings):
    """Settings of ``domaingpt lens`` (and a study's ``[lens]`` table)."""

    SECTION = "lens"


def per_prompt_frame(
    rec: Internals, prompts: PromptSet, model: str, corpus: str, it: int
) -> pd.DataFrame:
    """One row per prompt and layer (0 = embeddings), to 6 significant digits."""
    n, layers = rec.lens_loss.shape
    meta = prompts.frame()
    frame = pd.DataFrame(
        {
            "model": model,
            "iteration": it,
            "prompt_id": np.repeat(meta["prompt_id"].to_numpy(), layers),
            "prompt_corpus": np.repeat(meta["corpus"].to_numpy(), layers),
            "domain": np.repeat([domain_of(c, corpus) for c in meta["corpus"]], layers),
            "layer": np.tile(np.arange(layers), n),
            "loss_nats": rec.lens_loss.reshape(-1),
            "entropy_bits": rec.lens_entropy.reshape(-1),
            "p_true": rec.lens_p_true.reshape(-1),
            "kl_bits": rec.lens_kl.reshape(-1),
            "top1_agreement": rec.lens_top1.reshape(-1),
        },
        columns=PER_PROMPT,
    )
    return round_significant(frame, list(METRICS))


def formation_depth(per_prompt: pd.DataFrame) -> pd.DataFrame:
    """Per (model, iteration, prompt): the formation depth ``D`` (see the module doc)."""
    keys = ["model", "iteration", "prompt_id", "prompt_corpus", "domain"]
    kl = per_prompt.pivot_table(index=keys, columns="layer", values="kl_bits", sort=True)
    kl = kl.reindex(columns=sorted(kl.columns))
    values = kl.to_numpy()
    first = values[:, :1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.minimum(1.0, values[:, :-1] / first)
    depth = np.where(first[:, 0] > 0, np.nansum(ratio, axis=1), np.nan)
    out = kl.index.to_frame(index=False)
    out["depth"] = depth
    out["layers"] = values.shape[1] - 1
    return out


def _ci_rows(df: pd.DataFrame, keys: list[str], columns: tuple[str, ...]) -> pd.DataFrame:
    rows = []
    for key, g in df.groupby(keys, sort=True):
        row = dict(zip(keys, key, strict=True))
        for col in columns:
            ci = mean_ci(g[col].to_numpy())
            row["n"] = ci["n"]
            row.update({col: ci["mean"], f"{col}_low": ci["ci_low"], f"{col}_high": ci["ci_high"]})
        rows.append(row)
    return pd.DataFrame(rows)


def layer_summary(per_prompt: pd.DataFrame) -> pd.DataFrame:
    """Mean of every lens metric with its 95 % interval over prompts, per model,
    checkpoint, domain and layer."""
    return _ci_rows(per_prompt, ["model", "iteration", "domain", "layer"], METRICS)


def formation_summary(per_prompt: pd.DataFrame) -> pd.DataFrame:
    """Mean formation depth with its 95 % interval, per model, checkpoint and domain."""
    depth = formation_depth(per_prompt)
    out = _ci_rows(depth, ["model", "iteration", "domain"], ("depth",))
    out["layers"] = int(depth["layers"].max()) if len(depth) else 0
    return out


def _model_frames(model: ModelEntry, ready: Prepared, settings: LensSettings) -> pd.DataFrame:
    """One model's rows: every history checkpoint through the lens."""
    history = model.checkpoints
    return pd.concat(
        [
            per_prompt_frame(rec, ready.prompts, model.name, model.corpus, info.iteration)
            for info, rec in zip(history, ready.read(history, settings), strict=True)
        ],
        ignore_index=True,
    )


def run(ctx: StageContext, settings: LensSettings) -> dict[str, Path]:
    """Read every history checkpoint of every model through the lens; write ``lens/``.
    Under torchrun each model is a job on its own rank (:func:`map_ranks`)."""
    ready = prepare(ctx.run, settings, ctx.log)
    parts = map_ranks(
        partial(_model_frames, ready=ready, settings=settings), ready.models, log=ctx.log
    )
    per_prompt = pd.concat(parts, ignore_index=True)
    tables = {
        "per_prompt": per_prompt,
        "layers": layer_summary(per_prompt),
        "formation": formation_summary(per_prompt),
    }
    out = ctx.out
    paths = {name: write_table(df, out / f"{name}.csv") for name, df in tables.items()}
    paths["settings"] = write_json(out / "settings.json", settings.to_dict())
    paths["layers_png"] = plot_lens_layers(tables["layers"], out / "layers.png")
    paths["formation_png"] = plot_formation(tables["formation"], out / "formation.png")
    ctx.log(
        f"lens: {len(ready.models)} model(s), {len(ready.prompts)} prompts, "
        f"{per_prompt['iteration'].nunique()} checkpoint iteration(s); wrote {out}"
    )
    return paths


def load(run: RunDir) -> Tables:
    """The tables :func:`run` wrote: ``per_prompt``, ``layers`` and ``formation``."""
    folder = run.root / "lens"
    if not (folder / "per_prompt.csv").is_file():
        raise DomainGPTError(f"no lens results in {folder}; run `domaingpt lens --out {run.root}`")
    return {name: read_table(folder / f"{name}.csv") for name in TABLES}

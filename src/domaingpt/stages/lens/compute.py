"""The logit lens along training: the tables of every model, history checkpoint, prompt
and layer, from the shared per-checkpoint forward pass (:mod:`domaingpt.context.activations`).

Layer 0 is the embeddings, layer ``ℓ`` the output of block ``ℓ``; at the last layer the
lens is the model's own prediction. Per prompt (averaged over its positions): loss of the
true next character (nats), entropy (bits), p(true), KL(final ‖ layer) in bits and the
share of positions whose top-1 character is already the final one.

**Formation depth** (per prompt): the depth from which on the lens reading stays within
a fixed ``τ`` bits of KL of the final prediction (``τ``: the ``formation_kl_bits``
setting, 0.1 bits by default), interpolated linearly between the last layer ``j`` still
above it and the next: ``D = j + (KL_j − τ) / (KL_j − KL_{j+1})``, in layers. ``D = 0``:
the embeddings' reading already is within ``τ``; ``D`` in ``(k − 1, k]``: block ``k``
brings it there; the last layer's reading is the model's prediction (KL 0), so every
prompt forms by ``D = L`` (were its KL above ``τ``, the prompt counts as formed at ``L``).

The threshold is in bits, not a share of the embeddings' KL: that KL grows by orders of
magnitude over training, so a depth normalised by it (such as the area under
``min(1, KL_ℓ / KL_0)``) "falls" while no later layer moves closer to the final
prediction. Here ``KL_0`` enters only when the reading crosses ``τ`` between the
embeddings and block 1, and then moves ``D`` within that one layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from domaingpt.context.activations import Internals, InternalsSettings, Prepared
from domaingpt.context.prompts import PromptSet, domain_of
from domaingpt.context.rundir import ModelEntry
from domaingpt.context.stage import Tables
from domaingpt.core.distributed import Job
from domaingpt.core.settings import finite, setting
from domaingpt.core.statistics import mean_ci
from domaingpt.core.tables import round_significant
from domaingpt.errors import ConfigError

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


#: The default ``τ`` of the formation depth (bits of KL to the final prediction).
FORMATION_KL_BITS = 0.1


@dataclass(frozen=True)
class LensSettings(InternalsSettings):
    """Settings of ``domaingpt lens`` (and a study's ``[lens]`` table)."""

    formation_kl_bits: float = setting(
        FORMATION_KL_BITS,
        "KL to the final prediction (bits) within which a layer's reading counts as formed",
        cli=False,
    )

    def check(self) -> None:
        super().check()
        key = "formation_kl_bits"
        finite(key, self.formation_kl_bits)
        if not self.formation_kl_bits > 0:  # 0 would call no reading formed before the last
            raise ConfigError(f"{key} must be above 0 bits, got {self.formation_kl_bits}")


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


def depth_of(kl: np.ndarray, threshold_bits: float) -> np.ndarray:
    """The formation depth of each row of ``kl`` (KL to the final prediction in bits,
    one column per layer, embeddings first): see the module doc. NaN where a row has a
    missing layer."""
    kl = np.asarray(kl, dtype=np.float64)
    last = kl.shape[1] - 1
    above = kl > threshold_bits
    # j: the last layer still above the threshold (-1: none is)
    j = np.where(above.any(axis=1), last - np.argmax(above[:, ::-1], axis=1), -1)
    rows = np.arange(len(kl))
    here = kl[rows, np.clip(j, 0, last)]
    after = kl[rows, np.clip(j + 1, 0, last)]
    with np.errstate(divide="ignore", invalid="ignore"):
        crossed = j + (here - threshold_bits) / (here - after)
    depth = np.where(j < 0, 0.0, np.where(j >= last, float(last), crossed))
    return np.where(np.isnan(kl).any(axis=1), np.nan, depth)


def formation_depth(
    per_prompt: pd.DataFrame, threshold_bits: float = FORMATION_KL_BITS
) -> pd.DataFrame:
    """Per (model, iteration, prompt): the formation depth ``D`` (see the module doc),
    and ``layers``, the model's blocks (a model trained elsewhere may have others)."""
    if per_prompt.empty:
        return _depth_of_model(per_prompt, threshold_bits)
    parts = [_depth_of_model(g, threshold_bits) for _, g in per_prompt.groupby("model")]
    return pd.concat(parts, ignore_index=True)


def _depth_of_model(per_prompt: pd.DataFrame, threshold_bits: float) -> pd.DataFrame:
    keys = ["model", "iteration", "prompt_id", "prompt_corpus", "domain"]
    kl = per_prompt.pivot_table(index=keys, columns="layer", values="kl_bits", sort=True)
    kl = kl.reindex(columns=sorted(kl.columns))
    out = kl.index.to_frame(index=False)
    out["depth"] = depth_of(kl.to_numpy(), threshold_bits)
    out["layers"] = kl.shape[1] - 1
    return out


def formation_threshold(tables: Tables) -> float:
    """The ``τ`` the run's formation table was computed with (the default for a table
    written before it was recorded)."""
    formation = tables.get("formation")
    if formation is None or "threshold_bits" not in formation or formation.empty:
        return FORMATION_KL_BITS
    return float(formation["threshold_bits"].iloc[0])


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


def formation_summary(
    per_prompt: pd.DataFrame, threshold_bits: float = FORMATION_KL_BITS
) -> pd.DataFrame:
    """Mean formation depth with its 95 % interval, per model, checkpoint and domain,
    and the threshold it was computed with (``threshold_bits``)."""
    depth = formation_depth(per_prompt, threshold_bits)
    out = _ci_rows(depth, ["model", "iteration", "domain"], ("depth",))
    blocks = depth.groupby("model")["layers"].max()
    out["layers"] = out["model"].map(blocks).astype(int) if len(depth) else 0
    out["threshold_bits"] = threshold_bits
    return out


def _model_frames(
    model: ModelEntry, job: Job, ready: Prepared, settings: LensSettings
) -> pd.DataFrame:
    """One model's rows: every history checkpoint through the lens."""
    history, prompts = model.checkpoints, ready.prompts(model.name)
    return pd.concat(
        [
            per_prompt_frame(rec, prompts, model.name, model.corpus, info.iteration)
            for info, rec in zip(
                history, ready.read(model.name, history, settings, job), strict=True
            )
        ],
        ignore_index=True,
    )

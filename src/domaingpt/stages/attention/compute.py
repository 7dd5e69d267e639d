"""Attention along training: per layer and head, how spread out attention is and where
it goes, per checkpoint and domain, from the shared per-checkpoint forward pass
(:mod:`domaingpt.context.activations`).

Per prompt (averaged over its query positions ``i``, keys ``j ≤ i``):

``entropy_bits``
    ``−Σ_j p_ij log2 p_ij``: 0 when a head looks at one character, ``log2(i + 1)`` when
    it spreads evenly over every visible one;
``distance``
    ``Σ_j p_ij (i − j)``: how far back it looks, in characters;
``share_<group>``
    the attention on the query's current word, the whitespace before it (boundary), the
    previous word and further back (the same words as the saliency stage's positions
    relative to the target, here relative to every query).

``prompts.csv`` has, per prompt, the shares uniform attention over the visible keys would
give (``chance_<group>``): a head *reads* a group when its share exceeds that chance.
Layer ``ℓ`` is block ``ℓ`` (1-based), heads count from 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from domaingpt.context.activations import (
    WORD_GROUPS,
    Internals,
    InternalsSettings,
    Prepared,
)
from domaingpt.context.prompts import PromptSet, domain_of
from domaingpt.context.rundir import ModelEntry
from domaingpt.core.distributed import Job
from domaingpt.core.statistics import mean_ci
from domaingpt.core.tables import round_significant

SHARES = [f"share_{g}" for g in WORD_GROUPS]
CHANCE = [f"chance_{g}" for g in WORD_GROUPS]
MEASURES = ["entropy_bits", "distance", *SHARES]
KEYS = ["model", "iteration", "domain", "layer", "head"]
TABLES = ("per_prompt", "heads", "prompts")


@dataclass(frozen=True)
class AttentionSettings(InternalsSettings):
    """Settings of ``domaingpt attention`` (and a study's ``[attention]`` table)."""


def per_prompt_frame(
    rec: Internals, prompts: PromptSet, model: str, corpus: str, iteration: int
) -> pd.DataFrame:
    """One row per prompt, layer and head."""
    n, layers, heads = rec.attn_entropy.shape
    per = layers * heads
    ids = np.array([p.prompt_id for p in prompts.prompts])
    corpora = np.array([p.corpus for p in prompts.prompts])
    shares = rec.attn_share.reshape(n * per, len(WORD_GROUPS))
    frame = pd.DataFrame(
        {
            "model": model,
            "iteration": iteration,
            "prompt_id": np.repeat(ids, per),
            "prompt_corpus": np.repeat(corpora, per),
            "domain": np.repeat([domain_of(c, corpus) for c in corpora], per),
            "layer": np.tile(np.repeat(np.arange(1, layers + 1), heads), n),
            "head": np.tile(np.arange(heads), n * layers),
            "entropy_bits": rec.attn_entropy.reshape(-1),
            "distance": rec.attn_distance.reshape(-1),
            **{col: shares[:, k] for k, col in enumerate(SHARES)},
        }
    )
    return round_significant(frame, MEASURES)


def prompt_frame(rec: Internals, prompts: PromptSet) -> pd.DataFrame:
    """Per prompt: its corpus, length and uniform attention's share of each group."""
    frame = pd.DataFrame(
        {
            "prompt_id": [p.prompt_id for p in prompts.prompts],
            "prompt_corpus": [p.corpus for p in prompts.prompts],
            "length": rec.lengths,
            **{col: rec.attn_chance[:, k] for k, col in enumerate(CHANCE)},
        }
    )
    return round_significant(frame, CHANCE)


def head_summary(per_prompt: pd.DataFrame, prompts: pd.DataFrame) -> pd.DataFrame:
    """Mean of every measure with its 95 % interval over prompts, per model, checkpoint,
    domain, layer and head; with the mean chance shares of the same prompts."""
    chance = prompts.set_index("prompt_id")[CHANCE]
    rows = []
    for key, g in per_prompt.groupby(KEYS, sort=True):
        row = dict(zip(KEYS, key, strict=True))
        row["n"] = len(g)
        for col in MEASURES:
            ci = mean_ci(g[col].to_numpy())
            row.update({col: ci["mean"], f"{col}_low": ci["ci_low"], f"{col}_high": ci["ci_high"]})
        row.update(chance.loc[g["prompt_id"]].mean().to_dict())
        rows.append(row)
    return pd.DataFrame(rows)


def _model_frames(
    model: ModelEntry, job: Job, ready: Prepared, settings: AttentionSettings
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One model's rows (every history checkpoint), and the prompts' chance shares."""
    history, prompts = model.checkpoints, ready.prompts(model.name)
    recs = ready.read(model.name, history, settings, job)
    frames = [
        per_prompt_frame(rec, prompts, model.name, model.corpus, info.iteration)
        for info, rec in zip(history, recs, strict=True)
    ]
    return pd.concat(frames, ignore_index=True), prompt_frame(recs[0], prompts)

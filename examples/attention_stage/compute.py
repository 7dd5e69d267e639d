"""Mean attention distance: how far back, in characters, each head attends on average.

For a query at position ``i`` with attention weights ``p_ij`` over the keys ``j <= i``
the distance is ``Σ_j p_ij · (i − j)``; a prompt's value is its mean over every query
position ``0..L−1`` (table ``per_prompt``, per model, checkpoint, layer and head), and
``distance`` its mean over the prompts of each corpus with a 95 % interval. A head attending uniformly
scores ``(L − 1) / 4``; one that looks only at the current character scores 0.

The attention weights come from the model's named activation points
(``GPT.run_with_cache(ids, ["blocks.{i}.attn.pattern", ...])``), one forward pass per
batch of prompts; the prompts are the validation prompts every prompt-based stage uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from domaingpt.core.device import pick_device
from domaingpt.core.io import write_json
from domaingpt.core.rundir import RunDir
from domaingpt.core.settings import StageSettings, positive, setting
from domaingpt.core.stage import StageContext, Tables
from domaingpt.core.statistics import mean_ci
from domaingpt.core.tables import read_table, write_table
from domaingpt.data.prompts import PromptSet, build_prompt_set, domain_of
from domaingpt.errors import DomainGPTError
from domaingpt.model.checkpoint import load_checkpoint
from domaingpt.model.gpt import GPT

from .figures import plot_distance

PER_PROMPT = [
    "model",
    "model_corpus",
    "iteration",
    "prompt_id",
    "prompt_corpus",
    "domain",
    "layer",
    "head",
    "distance",
]
KEYS = ["model", "model_corpus", "iteration", "prompt_corpus", "domain", "layer", "head"]


@dataclass(frozen=True)
class AttentionSettings(StageSettings):
    """The ``[attention]`` table of a study file."""

    SECTION = "attention"
    models: list[str] = setting([], "models to measure (default: every trained model)")
    prompts_per_corpus: int = setting(16, "validation prompts per corpus")
    length: int = setting(64, "prompt length in characters (at most the models' block_size)")
    batch_size: int = setting(64, "prompts per forward pass")

    def check(self) -> None:
        super().check()
        positive("attention.prompts_per_corpus", self.prompts_per_corpus)
        positive("attention.length", self.length)
        positive("attention.batch_size", self.batch_size)


def mean_distance(pattern: torch.Tensor) -> torch.Tensor:
    """``(B, H, T, T)`` attention weights -> ``(B, H)``: ``Σ_j p_ij (i − j)`` averaged
    over the query positions ``i``."""
    T = pattern.shape[-1]
    pos = torch.arange(T, device=pattern.device, dtype=pattern.dtype)
    back = (pos[:, None] - pos[None, :]).clamp(min=0)  # i − j; the future has p = 0
    return (pattern * back).sum(-1).mean(-1)


@torch.inference_mode()
def prompt_distances(
    model: GPT, prompts: PromptSet, *, batch_size: int, device: torch.device
) -> np.ndarray:
    """``(N, n_layer, n_head)`` mean attention distance of every prompt (equal lengths)."""
    model.eval()
    names = [f"blocks.{i}.attn.pattern" for i in range(model.config.n_layer)]
    out = []
    for lo in range(0, len(prompts), batch_size):
        index = list(range(lo, min(lo + batch_size, len(prompts))))
        ids, *_ = prompts.tensors(device, index)
        _, cache = model.run_with_cache(ids, names)
        layers = [mean_distance(cache[n].float()) for n in names]  # each (B, H)
        out.append(torch.stack(layers, 1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def per_prompt_frame(
    dist: np.ndarray, prompts: PromptSet, model: str, model_corpus: str, iteration: int
) -> pd.DataFrame:
    """``(N, layers, heads)`` distances as tidy rows: one per prompt, layer and head."""
    n, layers, heads = dist.shape
    corpora = np.array([p.corpus for p in prompts.prompts])
    return pd.DataFrame(
        {
            "model": model,
            "model_corpus": model_corpus,
            "iteration": iteration,
            "prompt_id": np.repeat([p.prompt_id for p in prompts.prompts], layers * heads),
            "prompt_corpus": np.repeat(corpora, layers * heads),
            "domain": np.repeat([domain_of(c, model_corpus) for c in corpora], layers * heads),
            "layer": np.tile(np.repeat(np.arange(layers), heads), n),
            "head": np.tile(np.arange(heads), n * layers),
            "distance": dist.reshape(-1),
        },
        columns=PER_PROMPT,
    )


def summarise(per_prompt: pd.DataFrame, length: int) -> pd.DataFrame:
    """Mean distance over the prompts of each corpus, with its 95 % interval, per model,
    checkpoint, layer and head (``length``: the prompts' length, for the uniform baseline)."""
    rows = []
    for key, g in per_prompt.groupby(KEYS, sort=False):
        ci = mean_ci(g["distance"].to_numpy())
        rows.append({**dict(zip(KEYS, key, strict=True)), "length": length, **ci})
    out = pd.DataFrame(rows, columns=[*KEYS, "length", "n", "mean", "std", "ci_low", "ci_high"])
    return out.rename(columns={"mean": "mean_distance"})


def run(ctx: StageContext, settings: AttentionSettings) -> dict[str, Path]:
    """Measure every history checkpoint of every model; write ``attention/``."""
    models = ctx.run.model_entries(settings.models)
    vocab = ctx.run.vocab()
    prompts = build_prompt_set(
        ctx.run,
        models,
        vocab,
        per_corpus=settings.prompts_per_corpus,
        length=settings.length,
        data_dir=settings.data_dir or None,
        log=ctx.log,
    )
    device = pick_device(settings.device)
    parts: list[pd.DataFrame] = []
    for model in models:
        for info in model.checkpoints:
            loaded = load_checkpoint(info, device)
            if loaded.vocab.fingerprint != vocab.fingerprint:
                raise DomainGPTError(
                    f"checkpoint {info.json_path} uses another vocabulary than the run"
                )
            dist = prompt_distances(
                loaded.model, prompts, batch_size=settings.batch_size, device=device
            )
            parts.append(per_prompt_frame(dist, prompts, model.name, model.corpus, info.iteration))
    out = ctx.out
    out.mkdir(parents=True, exist_ok=True)
    per_prompt = pd.concat(parts, ignore_index=True)
    table = summarise(per_prompt, prompts.max_length)
    paths = {
        "per_prompt": write_table(per_prompt, out / "per_prompt.csv"),
        "distance": write_table(table, out / "distance.csv"),
        "settings": write_json(out / "settings.json", settings.to_dict()),
        "distance_png": plot_distance(table, out / "distance.png"),
    }
    ctx.log(f"attention: {len(models)} model(s), {len(prompts)} prompts; wrote {out}")
    return paths


def load(run: RunDir) -> Tables:
    """The stage's tables back: ``per_prompt`` (every prompt, layer and head) and
    ``distance`` (means over each corpus's prompts)."""
    folder = run.root / "attention"
    return {name: read_table(folder / f"{name}.csv") for name in ("per_prompt", "distance")}

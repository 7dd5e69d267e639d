"""The residual stream's size: the mean L2 norm of each layer's residual stream.

For a prompt, layer 0 is the embeddings (token + position) and layer ``ℓ`` the output of
block ``ℓ``; a prompt's value is the norm ``‖x_t‖₂`` averaged over its positions ``t``
(table ``per_prompt``, per model, checkpoint and layer), and ``norm`` its mean over the
prompts of each corpus with a 95 % interval. The final LayerNorm rescales whatever
reaches it, so the norm says how much each block writes into the stream, not how much it
matters; the built-in ``lens`` stage reads the same stream through the head.

The runner writes its settings and claims beside the tables it declares
(``per_prompt`` and ``norms``) and reads them back; the activations come from the model's
named activation points
(``GPT.run_with_cache(ids, ["embed", "blocks.{i}.resid_post", ...])``), one forward pass
per batch of prompts; the prompts are the validation prompts every prompt-based stage uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from domaingpt import api

from .figures import plot_norms

PER_PROMPT = [
    "model",
    "model_corpus",
    "iteration",
    "prompt_id",
    "prompt_corpus",
    "domain",
    "layer",
    "norm",
]
KEYS = ["model", "model_corpus", "iteration", "prompt_corpus", "domain", "layer"]


@dataclass(frozen=True)
class NormSettings(api.StageSettings):
    """The ``[norms]`` table of a study file."""

    models: list[str] = api.setting([], "models to measure (default: every trained model)")
    prompts_per_corpus: int = api.setting(16, "validation prompts per corpus")
    length: int = api.setting(64, "prompt length in characters (at most the models' block_size)")
    batch_size: int = api.setting(64, "prompts per forward pass")

    def check(self) -> None:
        super().check()
        api.positive("prompts_per_corpus", self.prompts_per_corpus)
        api.positive("length", self.length)
        api.positive("batch_size", self.batch_size)


def stream_names(model: api.GPT) -> list[str]:
    """The residual stream's activation points: the embeddings, then each block's output."""
    return ["embed", *(f"blocks.{i}.resid_post" for i in range(model.config.n_layer))]


@torch.inference_mode()
def prompt_norms(
    model: api.GPT, prompts: api.PromptSet, *, batch_size: int, device: torch.device
) -> np.ndarray:
    """``(N, n_layer + 1)`` mean residual-stream norm of every prompt (equal lengths)."""
    model.eval()
    names = stream_names(model)
    out = []
    for lo in range(0, len(prompts), batch_size):
        index = list(range(lo, min(lo + batch_size, len(prompts))))
        ids, *_ = prompts.tensors(device, index)
        _, cache = model.run_with_cache(ids, names)
        layers = [cache[n].float().norm(dim=-1).mean(-1) for n in names]  # each (B,)
        out.append(torch.stack(layers, 1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


def per_prompt_frame(
    norms: np.ndarray, prompts: api.PromptSet, model: str, model_corpus: str, iteration: int
) -> pd.DataFrame:
    """``(N, layers)`` norms as tidy rows: one per prompt and layer."""
    n, layers = norms.shape
    corpora = np.array([p.corpus for p in prompts.prompts])
    return pd.DataFrame(
        {
            "model": model,
            "model_corpus": model_corpus,
            "iteration": iteration,
            "prompt_id": np.repeat([p.prompt_id for p in prompts.prompts], layers),
            "prompt_corpus": np.repeat(corpora, layers),
            "domain": np.repeat([api.domain_of(c, model_corpus) for c in corpora], layers),
            "layer": np.tile(np.arange(layers), n),
            "norm": norms.reshape(-1),
        },
        columns=PER_PROMPT,
    )


def summarise(per_prompt: pd.DataFrame) -> pd.DataFrame:
    """Mean norm over the prompts of each corpus, with its 95 % interval, per model,
    checkpoint and layer."""
    rows = []
    for key, g in per_prompt.groupby(KEYS, sort=False):
        ci = api.mean_ci(g["norm"].to_numpy())
        rows.append({**dict(zip(KEYS, key, strict=True)), **ci})
    out = pd.DataFrame(rows, columns=[*KEYS, "n", "mean", "std", "ci_low", "ci_high"])
    return out.rename(columns={"mean": "mean_norm"})


def run(ctx: api.StageContext, settings: NormSettings) -> dict[str, Path]:
    """Measure every history checkpoint of every model; write ``norms/``."""
    models = ctx.run.model_entries(settings.models)
    vocab = ctx.run.vocab()
    prompts = api.build_prompt_set(
        ctx.run,
        models,
        vocab,
        per_corpus=settings.prompts_per_corpus,
        length=settings.length,
        data_dir=settings.data_dir or None,
        log=ctx.log,
    )
    device = api.pick_device(settings.device)
    parts: list[pd.DataFrame] = []
    for model in models:
        for info in model.checkpoints:
            loaded = api.load_checkpoint(info, device)
            if loaded.vocab.fingerprint != vocab.fingerprint:
                raise api.DomainGPTError(
                    f"checkpoint {info.json_path} uses another vocabulary than the run"
                )
            norms = prompt_norms(
                loaded.model, prompts, batch_size=settings.batch_size, device=device
            )
            parts.append(per_prompt_frame(norms, prompts, model.name, model.corpus, info.iteration))
    out = ctx.out
    per_prompt = pd.concat(parts, ignore_index=True)
    table = summarise(per_prompt)
    paths = {
        "per_prompt": ctx.write_table("per_prompt", per_prompt),
        "norms": ctx.write_table("norms", table),
        "norms_png": plot_norms(table, out / "norms.png"),
    }
    ctx.log(f"norms: {len(models)} model(s), {len(prompts)} prompts; wrote {out}")
    return paths

"""One domaingpt model as Hugging Face's ``GPT2LMHeadModel``, and back: names and layouts.

The two architectures are the same computation: learned token and position embeddings,
pre-LayerNorm blocks (causal attention with 1/sqrt(head_dim) scaling, a 4x MLP with
exact GELU), a final LayerNorm and a head tied to the token embedding. What differs is
bookkeeping: GPT-2 stores its projections as ``Conv1D`` (weights ``(in, out)``, the
transpose of ``nn.Linear``'s ``(out, in)``), calls them ``c_attn``/``c_proj``/``c_fc``,
and always has biases, so a model trained without them exports with zero biases (exactly
the same function). Query, key and value are packed in the same order (all of q, then k,
then v; heads contiguous within each), so ``c_attn`` is ``qkv`` transposed, nothing
permuted.

Transposes are exact, so export -> import gives back the very same tensors.
"""

from __future__ import annotations

from typing import Any

import torch

from domaingpt.model.gpt import GPTConfig

#: The key in an exported ``config.json`` under which domaingpt keeps what GPT-2's
#: config has no field for (our model config, the checkpoint's record); its ``format``.
META_KEY = "domaingpt"
META_FORMAT = "domaingpt-hf/1"
#: nn.LayerNorm's default, which every domaingpt model uses.
LAYER_NORM_EPS = 1e-5
#: The padding token: ``<unk>`` (id 0), the one special token of our vocabulary. Padding
#: is on the left (``tokenizer_config.json``), so a batch's prompts end where generation
#: starts; the attention mask hides the pads.
PAD_TOKEN_ID = 0
#: ``run.json`` keys an export does not repeat under ``"run"`` when the checkpoint record
#: (or, for the vocabulary, the export's own meta) holds the same value; the importer puts
#: them back.
RUN_FROM_RECORD = ("corpus", "corpus_sha256", "config")
#: Record and ``run.json`` keys that are paths of the machine the model was trained on:
#: an export (shared on a hub) leaves them out. The corpus stays known by name and SHA-256.
LOCAL_PATH_KEYS = frozenset({"corpus_path", "imported_from"})

_LINEARS = {  # ours -> GPT-2's, per block; each is transposed (Linear -> Conv1D)
    "attn.qkv": "attn.c_attn",
    "attn.proj": "attn.c_proj",
    "mlp.fc": "mlp.c_fc",
    "mlp.proj": "mlp.c_proj",
}
_NORMS = ("ln_1", "ln_2")


#: Hugging Face's ``activation_function`` names of our ``GPTConfig.gelu`` values.
HF_GELU = {"gelu": "exact", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}
#: The name an export writes for each (GPT-2's own for tanh).
GELU_NAME = {"exact": "gelu", "tanh": "gelu_new"}


def gpt2_config(cfg: GPTConfig, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``GPT2Config`` for a model of config ``cfg``.

    The model's GELU (exact ``"gelu"``; a GPT-2 imported with tanh GELU goes back as
    ``"gelu_new"``: :data:`HF_GELU`), ``n_positions`` =
    ``block_size``, our LayerNorm eps, a tied head, no BOS/EOS token (a character model
    trained on raw text has no document boundaries: any character named EOS would stop
    generation where it occurs; GPT-2's default 50256 would not even be an id here),
    ``<unk>`` as padding. ``meta`` is kept under :data:`META_KEY`.
    """
    return {
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": 4 * cfg.n_embd,
        "activation_function": GELU_NAME[cfg.gelu],
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": LAYER_NORM_EPS,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": PAD_TOKEN_ID,
        "architectures": ["GPT2LMHeadModel"],
        META_KEY: {"format": META_FORMAT, "model_config": cfg.to_dict(), **(meta or {})},
    }


def generation_config(cfg: GPTConfig) -> dict[str, Any]:
    """The keyword arguments of ``GenerationConfig`` for a model of config ``cfg``.

    ``max_length`` = ``block_size``: ``generate`` (and ``pipeline("text-generation")``
    with its default arguments) stops at the end of the context instead of indexing past
    the position embeddings. GPT-2 cannot slide its context as ``domaingpt sample`` does,
    so prompt + new characters must fit in it. Sampling as ``domaingpt sample`` samples
    by default: temperature 1, no top-k (``top_k = 0`` switches transformers 4's default
    50 off).
    """
    return {
        "max_length": cfg.block_size,
        "do_sample": True,
        "temperature": 1.0,
        "top_k": 0,
        "pad_token_id": PAD_TOKEN_ID,
        "bos_token_id": None,
        "eos_token_id": None,
    }


def to_gpt2(state: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """Our ``state_dict`` as ``GPT2LMHeadModel``'s (``transformer.*``; the tied
    ``lm_head.weight`` left to ``tie_word_embeddings``). Missing biases become zeros."""

    def bias(name: str, n: int, like: torch.Tensor) -> torch.Tensor:
        return state[name] if name in state else torch.zeros(n, dtype=like.dtype)

    C = cfg.n_embd
    out = {
        "transformer.wte.weight": state["tok_emb.weight"],
        "transformer.wpe.weight": state["pos_emb.weight"],
        "transformer.ln_f.weight": state["ln_f.weight"],
        "transformer.ln_f.bias": bias("ln_f.bias", C, state["ln_f.weight"]),
    }
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for ln in _NORMS:
            w = state[f"{ours}{ln}.weight"]
            out[f"{theirs}{ln}.weight"] = w
            out[f"{theirs}{ln}.bias"] = bias(f"{ours}{ln}.bias", C, w)
        for src, dst in _LINEARS.items():
            w = state[f"{ours}{src}.weight"]
            out[f"{theirs}{dst}.weight"] = w.t().contiguous()
            out[f"{theirs}{dst}.bias"] = bias(f"{ours}{src}.bias", w.shape[0], w)
    return out


def from_gpt2(tensors: dict[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """The inverse of :func:`to_gpt2`: GPT-2 tensors (with or without the
    ``transformer.`` prefix) as our ``state_dict`` for a model of config ``cfg``.

    Biases are kept when ``cfg.bias`` and dropped otherwise (the caller checks that they
    are zero first). ``KeyError`` names a tensor the file lacks.
    """
    t = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    out = {
        "tok_emb.weight": t["wte.weight"],
        "pos_emb.weight": t["wpe.weight"],
        "ln_f.weight": t["ln_f.weight"],
    }
    if cfg.bias:
        out["ln_f.bias"] = t["ln_f.bias"]
    for i in range(cfg.n_layer):
        ours, theirs = f"blocks.{i}.", f"h.{i}."
        for ln in _NORMS:
            out[f"{ours}{ln}.weight"] = t[f"{theirs}{ln}.weight"]
            if cfg.bias:
                out[f"{ours}{ln}.bias"] = t[f"{theirs}{ln}.bias"]
        for src, dst in _LINEARS.items():
            out[f"{ours}{src}.weight"] = t[f"{theirs}{dst}.weight"].t().contiguous()
            if cfg.bias:
                out[f"{ours}{src}.bias"] = t[f"{theirs}{dst}.bias"]
    return out


def bias_names(tensors: dict[str, torch.Tensor]) -> list[str]:
    """The GPT-2 bias tensors of a model (LayerNorm and projection biases; not the causal
    mask buffer ``attn.bias`` that old GPT-2 files carry)."""
    return sorted(k for k in tensors if k.endswith(".bias") and k.split(".")[-2] != "attn")

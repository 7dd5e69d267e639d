"""Text generation from a checkpoint: prompt, length, temperature, top-k, seed."""

from __future__ import annotations

import warnings

import torch

from domaingpt.core.device import full_precision
from domaingpt.data.vocab import UNK, Vocab
from domaingpt.errors import DomainGPTError
from domaingpt.model.gpt import GPT


def encode_prompt(vocab: Vocab, prompt: str, *, warn: bool = True) -> list[int]:
    """Prompt ids; characters outside the vocabulary become ``<unk>`` with a warning."""
    if not prompt:
        raise DomainGPTError(
            "the prompt is empty; give at least one character (e.g. --prompt '\\n')"
        )
    enc = vocab.encode(prompt)
    if enc.n_unk and warn:
        shown = ", ".join(repr(c) for c in enc.unknown_chars[:10])
        warnings.warn(
            f"{enc.n_unk} prompt character(s) not in the model's vocabulary ({shown}) "
            f"are read as {UNK}",
            stacklevel=2,
        )
    return [int(i) for i in enc.ids]


def generate_text(
    model: GPT,
    vocab: Vocab,
    prompt: str,
    n_chars: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 1,
    warn: bool = True,
) -> str:
    """``n_chars`` new characters after ``prompt`` (not included). Same seed, same text."""
    if n_chars < 0:
        raise DomainGPTError(f"number of characters must be zero or more, got {n_chars}")
    if temperature < 0:
        raise DomainGPTError(f"temperature must be zero or more, got {temperature}")
    if top_k is not None and top_k < 1:
        raise DomainGPTError(f"top-k must be at least 1, got {top_k}")
    ids = encode_prompt(vocab, prompt, warn=warn)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        # On the model's device (the GPU if it is there), in float32: sampled text is
        # never autocast.
        with torch.inference_mode(), full_precision(device):
            out = model.generate(
                idx, n_chars, temperature=temperature, top_k=top_k, generator=generator
            )
    finally:
        model.train(was_training)
    return vocab.decode(out[0, len(ids) :].tolist())

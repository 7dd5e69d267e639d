"""Text generation from a checkpoint: prompt, length, temperature, top-k, seed."""

from __future__ import annotations

import warnings

import torch

from domaingpt.core.threads import torch_threads
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
    """``n_chars`` new characters after ``prompt`` (not included). Same seed, same text.

    On a CPU the model runs single-threaded: one position's forward pass is too small to
    share (with two threads on a busy machine each character cost 100 ms instead of 2),
    and the text no longer depends on the machine's core count (matmuls round
    differently with another thread count, which can flip a sampled character).
    """
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
        with torch_threads(1 if device.type == "cpu" else 0):
            out = model.generate(
                idx, n_chars, temperature=temperature, top_k=top_k, generator=generator
            )
    finally:
        model.train(was_training)
    return vocab.decode(out[0, len(ids) :].tolist())

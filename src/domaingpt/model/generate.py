"""Text generation from a checkpoint: prompt, length, temperature, top-k, seed."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import torch

from domaingpt.core.device import full_precision
from domaingpt.core.settings import seed as check_seed
from domaingpt.core.threads import torch_threads
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.data.vocab import UNK
from domaingpt.errors import DomainGPTError
from domaingpt.model.gpt import GPT


def encode_prompt(vocab: AnyVocab, prompt: str, *, warn: bool = True) -> list[int]:
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


#: The most characters one call generates: 10 million take hours on a CPU; more is a
#: typo (``--chars 1e20``) that would run for ever.
MAX_CHARS = 10_000_000


def check_sampling(n_chars: int, temperature: float, top_k: int | None, seed: int) -> None:
    """Refuse, before anything is generated, a request that cannot give a sensible text."""
    if n_chars < 0:
        raise DomainGPTError(f"number of characters must be zero or more, got {n_chars}")
    if n_chars > MAX_CHARS:
        raise DomainGPTError(
            f"{n_chars:,} characters asked for; one call generates at most {MAX_CHARS:,} "
            "(generate longer texts in parts, with different seeds)"
        )
    if not math.isfinite(temperature) or temperature < 0:
        raise DomainGPTError(
            f"temperature must be a finite number, zero or more, got {temperature}"
        )
    if top_k is not None and top_k < 1:
        raise DomainGPTError(f"top-k must be at least 1, got {top_k}")
    check_seed("the sampling seed", seed)


def sample_threads(device: torch.device) -> int:
    """The torch threads a sampled text is generated with: 1 on a CPU (0: as is).

    One position's forward pass is too small to share (on a busy machine a second thread
    spends far longer waiting for its sibling than the work takes), and one thread keeps
    the text independent of the machine's core count (matmuls round differently with
    another thread count, which can flip a sampled character).
    """
    return 1 if device.type == "cpu" else 0


#: What a subword tokenizer decodes a piece of a character to.
INCOMPLETE = "\ufffd"


def stream_text(
    model: GPT,
    vocab: AnyVocab,
    prompt: str,
    n_chars: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 1,
    warn: bool = True,
) -> Iterator[str]:
    """The text :func:`generate_text` returns, piece by piece as it is sampled (one
    character, or one token of a subword vocabulary: ``n_chars`` counts ids).

    The request is checked now, before the first character: a caller can print the
    prompt knowing the text will follow, and stop at any point keeping what it printed.
    Each character is sampled on the model's device (the GPU if it is there), in float32
    (sampled text is never autocast) and, on a CPU, single-threaded (see
    :func:`sample_threads`); the caller's own settings hold between characters.
    """
    check_sampling(n_chars, temperature, top_k, seed)
    ids = encode_prompt(vocab, prompt, warn=warn)
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    idx = torch.tensor([ids], dtype=torch.long, device=device)

    def chars() -> Iterator[str]:
        was_training = model.training
        model.eval()
        try:
            new = model.generate_ids(
                idx, n_chars, temperature=temperature, top_k=top_k, generator=generator
            )
            pending: list[int] = []  # ids of a character not complete yet (subword pieces)
            while True:
                with (
                    torch.inference_mode(),
                    full_precision(device),
                    torch_threads(sample_threads(device)),
                ):
                    nxt = next(new, None)
                if nxt is None:
                    if pending:
                        yield vocab.decode(pending)
                    return
                pending.append(int(nxt[0, 0]))
                text = vocab.decode(pending)
                # A byte-level piece of a character decodes to U+FFFD until the piece
                # that completes it comes (a character is at most 4 bytes).
                if text.endswith(INCOMPLETE) and len(pending) < 4:
                    continue
                pending.clear()
                yield text
        finally:
            model.train(was_training)

    return chars()


def generate_text(
    model: GPT,
    vocab: AnyVocab,
    prompt: str,
    n_chars: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 1,
    warn: bool = True,
) -> str:
    """``n_chars`` new characters after ``prompt`` (not included). Same seed, same text."""
    return "".join(
        stream_text(
            model, vocab, prompt, n_chars, temperature=temperature, top_k=top_k, seed=seed,
            warn=warn,
        )
    )  # fmt: skip

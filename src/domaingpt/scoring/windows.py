"""Deterministic loss of a model on a token stream, window by window.

The whole split is cut into disjoint windows of ``block_size`` (see
:func:`domaingpt.data.encoding.window_starts`): every character is predicted exactly once,
from the characters before it in its window (0 to ``block_size - 1`` of them). This is the
"non-overlapping windows" convention; it scores the same characters as nanoGPT's
training loss but is exact and repeatable, unlike nanoGPT's random ``estimate_loss``.

Context convention: windows do not overlap, so the first character of a window is
predicted from no context at all and the last from ``block_size - 1`` characters. It
costs one forward pass per ``block_size`` characters (overlapping windows, which give
every character a long context, cost one per character), it is the loss the training
code reports, and it is lm-evaluation-harness's ``loglikelihood_rolling`` convention too
(disjoint windows of ``max_length``): an exported model scores the same there (README,
"lm-evaluation-harness").

Two engines compute it: the model's own forward pass (any device) and, on a CPU, the
native engine of :mod:`domaingpt.scoring.cpu_engine` (same numbers to float rounding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from domaingpt.core.device import autocast
from domaingpt.data.encoding import window_chars, window_ids, window_mask, window_starts
from domaingpt.errors import DomainGPTError
from domaingpt.model.gpt import GPT
from domaingpt.scoring import cpu_engine


@dataclass(frozen=True)
class WindowScores:
    """Summed negative log-likelihood (nats), scored-target count and the characters
    those targets cover, of every window."""

    nll: np.ndarray
    count: np.ndarray
    starts: np.ndarray
    chars: np.ndarray

    @property
    def mean_loss(self) -> float:
        """Nats per token (per character for a character vocabulary)."""
        return float(self.nll.sum() / max(self.count.sum(), 1))

    @property
    def n_scored(self) -> int:
        return int(self.count.sum())

    @property
    def n_chars(self) -> int:
        return int(self.chars.sum())

    @property
    def bits_per_char(self) -> float:
        """Bits per character: the summed loss over the characters its targets cover,
        the unit in which models with different tokenizers compare."""
        return float(self.nll.sum() / max(self.n_chars, 1) / math.log(2.0))


ENGINES = ("auto", "native", "torch")


def score_windows(
    model: GPT,
    ids: np.ndarray,
    *,
    batch_size: int = 128,
    max_windows: int | None = None,
    block_size: int | None = None,
    engine: str = "auto",
    lengths: np.ndarray | None = None,
) -> WindowScores:
    """Per-window NLL of ``ids`` under ``model`` (eval mode, no gradient, large batches).

    ``lengths``: the characters each id covers (a subword vocabulary's; None: one each).

    ``engine``: ``"native"`` is :mod:`domaingpt.scoring.cpu_engine` (CPU only: fused native
    kernels, one worker per thread; the same numbers to float rounding, in less time),
    ``"torch"`` the model's own forward pass, ``"auto"`` the first that can run here.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    T = block_size or model.config.block_size
    starts = window_starts(len(ids), T, max_windows)
    mask = window_mask(starts, T)
    count = mask.sum(axis=1).astype(np.int64)
    why_not = "torch asked for" if engine == "torch" else cpu_engine.unsupported(model)
    if engine == "native" and why_not:
        raise DomainGPTError(f"the native scoring engine cannot run here: {why_not}")
    was_training = model.training
    model.eval()
    try:
        if why_not is None:
            nll = cpu_engine.score(model, ids, starts, mask, batch_size)
        else:
            nll = _score_torch(model, ids, starts, mask, batch_size)
    finally:
        model.train(was_training)
    chars = window_chars(lengths, starts, T)
    return WindowScores(
        nll=nll, count=count, starts=starts, chars=count if chars is None else chars
    )


@torch.inference_mode()
def _score_torch(
    model: GPT, ids: np.ndarray, starts: np.ndarray, mask: np.ndarray, batch_size: int
) -> np.ndarray:
    T = mask.shape[1]
    device = next(model.parameters()).device
    nll = np.zeros(len(starts), dtype=np.float64)
    for lo in range(0, len(starts), batch_size):
        s = starts[lo : lo + batch_size]
        chunk = torch.from_numpy(window_ids(ids, s, T)).to(device)
        with autocast(device):
            logits, _ = model(chunk[:, :-1])
        losses = F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)),
            chunk[:, 1:].reshape(-1),
            reduction="none",
        ).view(len(s), T)
        m = torch.from_numpy(mask[lo : lo + batch_size]).to(device)
        nll[lo : lo + batch_size] = (losses * m).sum(dim=1).double().cpu().numpy()
    return nll

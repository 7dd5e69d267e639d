"""Deterministic loss of a model on a token stream, window by window.

The whole split is cut into disjoint windows of ``block_size`` (see
:func:`domaingpt.data.window_starts`): every character is predicted exactly once, from
the characters before it in its window (0 to ``block_size - 1`` of them). This is the
"non-overlapping windows" convention; it scores the same characters as nanoGPT's
training loss but is exact and repeatable, unlike nanoGPT's random ``estimate_loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .data import window_mask, window_starts
from .device import autocast
from .model import GPT


@dataclass(frozen=True)
class WindowScores:
    """Summed negative log-likelihood (nats) and scored-target count of every window."""

    nll: np.ndarray
    count: np.ndarray
    starts: np.ndarray

    @property
    def mean_loss(self) -> float:
        return float(self.nll.sum() / max(self.count.sum(), 1))

    @property
    def n_scored(self) -> int:
        return int(self.count.sum())


@torch.inference_mode()
def score_windows(
    model: GPT,
    ids: np.ndarray,
    *,
    batch_size: int = 128,
    max_windows: int | None = None,
    block_size: int | None = None,
) -> WindowScores:
    """Per-window NLL of ``ids`` under ``model`` (eval mode, no gradient, large batches)."""
    T = block_size or model.config.block_size
    device = next(model.parameters()).device
    starts = window_starts(len(ids), T, max_windows)
    mask = window_mask(starts, T)
    offsets = np.arange(T + 1)
    nll = np.zeros(len(starts), dtype=np.float64)
    count = mask.sum(axis=1).astype(np.int64)
    was_training = model.training
    model.eval()
    try:
        for lo in range(0, len(starts), batch_size):
            s = starts[lo : lo + batch_size]
            chunk = torch.from_numpy(ids[s[:, None] + offsets].astype(np.int64)).to(device)
            with autocast(device):
                logits, _ = model(chunk[:, :-1])
            losses = F.cross_entropy(
                logits.float().reshape(-1, logits.size(-1)),
                chunk[:, 1:].reshape(-1),
                reduction="none",
            ).view(len(s), T)
            m = torch.from_numpy(mask[lo : lo + batch_size]).to(device)
            nll[lo : lo + batch_size] = (losses * m).sum(dim=1).double().cpu().numpy()
    finally:
        model.train(was_training)
    return WindowScores(nll=nll, count=count, starts=starts)

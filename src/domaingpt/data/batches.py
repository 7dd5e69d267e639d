"""The batches a training step eats: random windows gathered in one indexing call.

Kept apart from :mod:`domaingpt.data` so that encoding a corpus never imports torch
(encoding a corpus larger than memory stays within a small resident set).
"""

from __future__ import annotations

import numpy as np
import torch

from domaingpt.data.encoding import window_ids
from domaingpt.errors import DomainGPTError


class BatchSampler:
    """Random windows of ``block_size + 1`` ids, gathered in one indexing call per batch.

    With ``world > 1`` (DDP), each rank keeps its slice of the same global batch.

    The generator's state is part of every resumable checkpoint, so a resumed run draws
    exactly the batches the uninterrupted one would have drawn.
    """

    def __init__(
        self,
        data: np.ndarray,
        block_size: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        *,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if len(data) < block_size + 1:
            raise DomainGPTError(f"training split has {len(data)} ids, needs block_size + 1")
        self.data = data
        self.block_size = block_size
        self.batch_size = batch_size
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)
        self._high = len(data) - block_size  # exclusive upper bound of a window start
        # Under DDP every rank draws the same global batch and keeps its own rows.
        per_rank = batch_size // world
        self._rows = slice(rank * per_rank, (rank + 1) * per_rank)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(self._high, (self.batch_size,), generator=self.generator).numpy()
        starts = starts[self._rows]
        chunk = torch.from_numpy(window_ids(self.data, starts, self.block_size))
        if self.device.type == "cuda":
            chunk = chunk.pin_memory().to(self.device, non_blocking=True)
        elif self.device.type != "cpu":
            chunk = chunk.to(self.device)
        return chunk[:, :-1], chunk[:, 1:]

    def state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

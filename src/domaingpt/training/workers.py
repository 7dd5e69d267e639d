"""The gradients of a training step computed by one worker per core, as the evaluator scores.

A small model's ops (a cpu-mini step multiplies 768×128 matrices) are too short to split
across cores: with two intra-op threads every op pays a fork and a join, and on a shared
machine a descheduled sibling makes the other spin. Here each worker thread runs PyTorch
single-threaded on its own rows of the batch, forward and backward (matmuls and the
autograd engine release the GIL, so the workers run in parallel), and returns the
gradients of its share of the loss; the shares are summed in worker order. The optimizer
step that follows is the trainer's, once, on the summed gradient.

Same mathematics as the plain step: worker ``k`` of ``W`` takes rows ``[b_k, b_{k+1})`` of
each micro-batch and scales its mean loss by its share of the batch's tokens, so the sum
is the batch's mean loss and its gradient the plain step's, up to float32 rounding (the
sums run in another order). For a fixed number of workers every step is computed the same
way, so a seeded run is bitwise reproducible; another worker count rounds differently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import torch

#: Called with a shard's inputs and targets; returns its mean loss (a scalar tensor).
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    """One pool per worker count for the whole process: a trainer per adaptation run
    must not start threads of its own."""
    return ThreadPoolExecutor(workers, thread_name_prefix="domaingpt-train")


def shard_bounds(rows: int, workers: int) -> list[int]:
    """Row boundaries of ``workers`` contiguous shards of a batch, as even as can be."""
    return np.linspace(0, rows, workers + 1).round().astype(int).tolist()


class ParallelGrads:
    """Gradients of ``loss_fn`` with respect to ``params`` over micro-batches, computed by
    ``workers`` threads on their shards of each (see the module doc)."""

    def __init__(self, loss_fn: LossFn, params: Sequence[torch.Tensor], workers: int) -> None:
        if workers < 2:
            raise ValueError(f"ParallelGrads needs at least 2 workers, got {workers}")
        self.loss_fn = loss_fn
        self.params = list(params)
        self.workers = workers

    def _work(
        self, k: int, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Worker ``k``: its summed loss share and gradient over every micro-batch."""
        total = torch.zeros(())
        acc: list[torch.Tensor] = []
        with torch.enable_grad():
            for x, y in batches:
                lo, hi = shard_bounds(x.shape[0], self.workers)[k : k + 2]
                if hi == lo:
                    continue
                weight = (hi - lo) / (x.shape[0] * len(batches))
                loss = self.loss_fn(x[lo:hi], y[lo:hi]) * weight
                grads = torch.autograd.grad(loss, self.params)
                if acc:
                    torch._foreach_add_(acc, grads)
                else:
                    acc = list(grads)
                total += loss.detach()
        return total, acc

    def __call__(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Set each parameter's ``.grad`` to the gradient of the mean loss over
        ``batches`` (the micro-batches of one step); returns that loss, detached."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # each worker single-threaded: the cores are the workers
        try:
            pool = _pool(self.workers)
            done = [pool.submit(self._work, k, batches) for k in range(self.workers)]
            results = [f.result() for f in done]
        finally:
            torch.set_num_threads(threads)
        results = [(loss, grads) for loss, grads in results if grads]
        total, grads = results[0]
        for loss, more in results[1:]:  # in worker order: the same sums every step
            total = total + loss
            torch._foreach_add_(grads, more)
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
        return total

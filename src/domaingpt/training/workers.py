"""The gradients of a training step computed by one worker per core, as the evaluator scores.

Opt-in (``train.step = "workers" | "native"``): on a quiet 2-core machine it ran at
0.83–1.00× the plain step (README, "The training step"), whose two-threaded matmuls on
the whole batch beat single-threaded ones on half of it. The reasoning below is why it
may pay on more cores.

A small model's ops (a cpu-mini step multiplies 768×128 matrices) are too short to split
across cores: with two intra-op threads every op pays a fork and a join, and on a shared
machine a descheduled sibling makes the other spin. Here each worker thread runs PyTorch
single-threaded on its own rows of the batch, forward and backward (matmuls, native
kernels and the autograd engine release the GIL, so the workers run in parallel), and
adds the gradient of its share of the loss to a buffer of its own; the buffers are summed
in worker order. The optimizer step that follows is the trainer's, once, on that sum.

Each worker computes with :class:`~domaingpt.training.native_step.NativeWorker` (the
forward and backward written out, with native kernels) where it supports the model, else
with autograd on the model itself.

Same mathematics as the plain step: worker ``k`` of ``W`` takes rows ``[b_k, b_{k+1})`` of
each micro-batch and scales its mean loss by its share of the batch's rows, so the sum is
the batch's mean loss and its gradient the plain step's, up to float32 rounding (the sums
run in another order). For a fixed number of workers every step is computed the same
way, so a seeded run is bitwise reproducible; another worker count rounds differently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Protocol

import numpy as np
import torch

from domaingpt.model.gpt import GPT
from domaingpt.training import native_step

#: The engines a worker can compute with.
ENGINES = ("auto", "native", "autograd")


class Worker(Protocol):
    grad: torch.Tensor  # flat: the parameters' gradients, in model.parameters() order

    def add(self, x: torch.Tensor, y: torch.Tensor, weight: float) -> torch.Tensor: ...


@lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    """One pool per worker count for the whole process: a trainer per adaptation run
    must not start threads of its own."""
    return ThreadPoolExecutor(workers, thread_name_prefix="domaingpt-train")


def shard_bounds(rows: int, workers: int) -> list[int]:
    """Row boundaries of ``workers`` contiguous shards of a batch, as even as can be."""
    return np.linspace(0, rows, workers + 1).round().astype(int).tolist()


class AutogradWorker:
    """A worker computing with autograd on the model itself (any model, dropout aside)."""

    def __init__(self, loss_fn: Callable, params: Sequence[torch.Tensor]) -> None:
        self.loss_fn, self.params = loss_fn, list(params)
        self.grad = torch.zeros(sum(p.numel() for p in self.params))
        bounds = np.cumsum([0, *(p.numel() for p in self.params)])
        self._slots = [
            self.grad[lo:hi].view_as(p)
            for p, lo, hi in zip(self.params, bounds[:-1], bounds[1:], strict=True)
        ]

    def add(self, x: torch.Tensor, y: torch.Tensor, weight: float) -> torch.Tensor:
        with torch.enable_grad():
            loss = self.loss_fn(x, y) * weight
            torch._foreach_add_(self._slots, torch.autograd.grad(loss, self.params))
        return loss.detach().double()


def pick_engine(model: GPT, engine: str = "auto") -> str:
    """``native`` where :mod:`domaingpt.training.native_step` supports ``model``, else
    ``autograd``; an engine asked for by name must be able to run."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    why_not = native_step.unsupported(model)
    if engine == "native" and why_not:
        raise ValueError(f"the native training step cannot run here: {why_not}")
    return "autograd" if engine == "autograd" or why_not else "native"


class ParallelGrads:
    """Gradients of the mean loss of ``model`` over micro-batches of up to ``rows`` rows,
    computed by ``workers`` threads on their shards of each (see the module doc)."""

    def __init__(self, model: GPT, rows: int, workers: int, engine: str = "auto") -> None:
        if workers < 1:
            raise ValueError(f"ParallelGrads needs at least 1 worker, got {workers}")
        self.params = list(model.parameters())
        self.workers = workers
        self.engine = pick_engine(model, engine)
        per_worker = max(np.diff(shard_bounds(rows, workers)))
        self._workers: list[Worker] = [
            native_step.NativeWorker(model, per_worker, torch.zeros(model.num_params(False)))
            if self.engine == "native"
            else AutogradWorker(lambda x, y: model(x, y)[1], self.params)
            for _ in range(workers)
        ]

    def _work(self, k: int, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Worker ``k``: its summed loss share; its gradient is in its buffer."""
        worker = self._workers[k]
        worker.grad.zero_()
        total = torch.zeros((), dtype=torch.float64)
        for x, y in batches:
            lo, hi = shard_bounds(x.shape[0], self.workers)[k : k + 2]
            if hi > lo:
                total += worker.add(x[lo:hi], y[lo:hi], (hi - lo) / (x.shape[0] * len(batches)))
        return total

    def __call__(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Set each parameter's ``.grad`` to the gradient of the mean loss over
        ``batches`` (the micro-batches of one step); returns that loss, detached."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # each worker single-threaded: the cores are the workers
        try:
            if self.workers == 1:  # benchmarks compare with the plain step on one core
                losses = [self._work(0, batches)]
            else:
                pool = _pool(self.workers)
                done = [pool.submit(self._work, k, batches) for k in range(self.workers)]
                losses = [f.result() for f in done]
        finally:
            torch.set_num_threads(threads)
        grad = self._workers[0].grad
        for worker in self._workers[1:]:  # in worker order: the same sums every step
            grad += worker.grad
        offset = 0
        for p in self.params:
            p.grad = grad[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        return sum(losses[1:], losses[0]).float()

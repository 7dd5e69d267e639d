"""The training step: AdamW, nanoGPT's learning-rate schedule, gradient accumulation, DDP.

Shared by ``domaingpt train`` (:mod:`domaingpt.training.loop`) and few-shot adaptation,
which is training too.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from domaingpt.core.config import TrainSpec
from domaingpt.core.device import autocast, is_out_of_memory
from domaingpt.core.distributed import DistContext, check_batch
from domaingpt.data.batches import BatchSampler
from domaingpt.model.gpt import GPT
from domaingpt.training.memory import out_of_memory


def lr_at(it: int, spec: TrainSpec) -> float:
    """Linear warm-up, then cosine decay to ``min_lr`` at ``decay_iters`` (nanoGPT's schedule)."""
    if it < spec.warmup_iters:
        return spec.lr * (it + 1) / (spec.warmup_iters + 1)
    if it >= spec.decay_iters:
        return spec.min_lr
    ratio = (it - spec.warmup_iters) / max(spec.decay_iters - spec.warmup_iters, 1)
    return spec.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (spec.lr - spec.min_lr)


#: Devices where ``torch.optim.AdamW(fused=True)`` runs (in every torch this package
#: supports); elsewhere its ``foreach`` implementation.
FUSED_DEVICES = ("cpu", "cuda")


def make_optimizer(model: GPT, spec: TrainSpec, device: torch.device) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` with weight decay on matrices only (not biases, LayerNorm
    gains), fused where the device has the kernel; ``lr`` is set per step by the trainer.

    Its first step imports ``torch._dynamo`` (torch's optimizer methods are wrapped in
    decorators that do): about 1.4 s once per process on a 2-core CPU, the price of using
    torch's optimizer as torch ships it.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": spec.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = device.type in FUSED_DEVICES
    return torch.optim.AdamW(
        groups, lr=spec.lr, betas=(spec.beta1, spec.beta2), fused=fused, foreach=not fused
    )


def should_compile(setting: str, device: torch.device) -> bool:
    """``auto`` compiles on CUDA only: on a 2-core CPU compilation costs more than it saves
    for the small presets (see benchmarks/bench_train.py)."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def _eagerly(error: Exception) -> None:
    first = (str(error).strip().splitlines() or [""])[0][:200]
    print(f"torch.compile unavailable ({type(error).__name__}: {first}); running eagerly")


class Trainer:
    """Optimizer, batch sampler and the training step for one model.

    Shared by :func:`train` and by few-shot adaptation, which is training too.
    """

    def __init__(
        self,
        model: GPT,
        spec: TrainSpec,
        train_ids: np.ndarray,
        device: torch.device,
        ctx: DistContext | None = None,
    ) -> None:
        self.ctx = ctx or DistContext(device=device)
        check_batch(self.ctx, spec.batch_size)
        self.model = model.to(device).train()
        self.spec = spec
        self.device = device
        self.optimizer = make_optimizer(model, spec, device)
        self.sampler = BatchSampler(
            train_ids,
            model.config.block_size,
            spec.batch_size,
            spec.seed,
            device,
            rank=self.ctx.rank,
            world=self.ctx.world,
        )
        self.iteration = 0
        # The module that all-reduces gradients (DDP under torchrun), and the callable the
        # step runs: that module, compiled when asked. Compiling the *wrapped* module keeps
        # DDP's gradient hooks; compiling the bare model would train each rank alone.
        self._ddp: Any = None
        wrapped: torch.nn.Module = model
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self._ddp = wrapped = DistributedDataParallel(model, device_ids=ids)
        self._forward: Any = wrapped
        self._eager: Any = None  # while set, the compiled forward has not run yet
        if should_compile(spec.compile, device):
            try:
                self._forward, self._eager = torch.compile(wrapped), wrapped
            except Exception as e:  # compile is an optimisation: fall back, never fail
                _eagerly(e)
        self._params = [p for p in model.parameters() if p.requires_grad]
        self.tokens_per_iter = spec.batch_size * spec.grad_accum * model.config.block_size
        #: The total L2 norm of the last step's gradients, before clipping (a tensor: no
        #: device sync until it is read); None when the step neither clipped nor was
        #: asked for it.
        self.grad_norm: torch.Tensor | None = None

    def step(self, *, grad_norm: bool = False) -> torch.Tensor:
        """One optimizer step (with gradient accumulation); returns the detached mean loss.

        :attr:`grad_norm` is set whenever the step clips (``clip_grad_norm_`` returns the
        norm it clips by, at no extra cost), and with ``grad_norm`` also when it does not.
        Running out of memory is one line naming the settings to lower.
        """
        shape = f"in a training step (batch_size {self.spec.batch_size})"
        with out_of_memory(shape):
            return self._step(grad_norm)

    def _step(self, want_norm: bool = False) -> torch.Tensor:
        lr = lr_at(self.iteration, self.spec)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = self._accumulate()
        self.grad_norm = None
        if self.spec.grad_clip > 0:
            self.grad_norm = torch.nn.utils.clip_grad_norm_(
                self._params, self.spec.grad_clip, foreach=True
            )
        elif want_norm:
            grads = [p.grad for p in self._params if p.grad is not None]
            self.grad_norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.iteration += 1
        return total

    def _accumulate(self) -> torch.Tensor:
        """The step's gradients: one autograd pass per micro-batch, accumulated in
        ``.grad``; returns the mean loss, detached."""
        total = torch.zeros((), device=self.device)
        for micro in range(self.spec.grad_accum):
            x, y = self.sampler.next()
            # Under DDP, gradients are all-reduced on the last micro-step only.
            last = micro == self.spec.grad_accum - 1
            sync = self._ddp.no_sync() if self._ddp is not None and not last else nullcontext()
            with sync, autocast(self.device):
                _, loss = self._call(x, y)
                (loss / self.spec.grad_accum).backward()
            total += loss.detach()
        return total / self.spec.grad_accum

    def _call(self, x: torch.Tensor, y: torch.Tensor) -> Any:
        """The forward pass; the first compiled one falls back to eager if compiling fails
        (torch.compile compiles on first use: a missing compiler shows only then)."""
        if self._eager is None:
            return self._forward(x, y)
        try:
            out = self._forward(x, y)
        except Exception as e:
            if is_out_of_memory(e):
                raise
            _eagerly(e)
            self._forward = self._eager
            out = self._forward(x, y)
        self._eager = None
        return out

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Optimizer moments and RNG states, as flat named tensors for safetensors."""
        out: dict[str, torch.Tensor] = {}
        for idx, state in self.optimizer.state_dict()["state"].items():
            for key, value in state.items():
                out[f"optim.{idx}.{key}"] = torch.as_tensor(value)
        out["rng.batch"] = self.sampler.state()
        out["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            out["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        return out

    def load_state(self, tensors: dict[str, torch.Tensor], iteration: int) -> None:
        sd = self.optimizer.state_dict()
        state: dict[int, dict[str, torch.Tensor]] = {}
        for name, value in tensors.items():
            if name.startswith("optim."):
                _, idx, key = name.split(".", 2)
                state.setdefault(int(idx), {})[key] = value
        sd["state"] = state
        self.optimizer.load_state_dict(sd)
        self.sampler.set_state(tensors["rng.batch"])
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        self.iteration = iteration

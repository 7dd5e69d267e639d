"""Data-parallel training on PyTorch's own engine: ``torchrun`` + DistributedDataParallel.

Launched by ``torchrun --nproc_per_node=K -m domaingpt train ...``: torchrun sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; this module joins
the process group (NCCL on CUDA, Gloo on CPU). Without those variables everything runs
as a single process and none of this is touched.

How the work is split: every rank draws the *same* global batch of ``batch_size`` windows
(same generator, same seed) and keeps its own contiguous slice of ``batch_size / world``
rows. DDP averages the gradients, so a step sees exactly the global batch a single
process would: the loss curve matches one process for the same seed and global batch.
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from domaingpt.core.device import pick_device
from domaingpt.errors import ConfigError, DomainGPTError

TIMEOUT_ENV = "DOMAINGPT_DIST_TIMEOUT"  # seconds a collective waits for a dead peer


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Only the main rank writes checkpoints, metrics, samples and figures."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_name: str = "auto") -> DistContext:
    """Join the process group if launched by torchrun; otherwise a one-process context."""
    if not launched_by_torchrun():
        return DistContext(device=pick_device(device_name))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "600")))
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend, timeout=timeout)
        except Exception as e:  # a bad rendezvous address, a missing peer
            raise DomainGPTError(f"rank {rank}: cannot join the process group ({e})") from None
        # Without this, Gloo's worker threads can still hold tensors when the interpreter
        # finalizes; releasing them then takes the GIL and aborts the rank (SIGABRT;
        # pytorch/pytorch#179291). Destroyed at exit, while Python is still whole.
        atexit.register(shutdown)
    return DistContext(rank, world, local_rank, device)


def check_batch(ctx: DistContext, batch_size: int) -> int:
    """Rows per rank; a world size that does not divide the batch is refused up front."""
    if batch_size % ctx.world:
        raise ConfigError(
            f"train.batch_size {batch_size} is not divisible by the world size {ctx.world}; "
            f"use a multiple of {ctx.world} or another --nproc_per_node"
        )
    return batch_size // ctx.world


def all_reduce_mean(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= ctx.world
    return t


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (a no-op when not in one); safe to call more than once."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

"""Will a training step fit in memory? Refused up front when it clearly cannot, and a
step that runs out anyway is one line naming the settings to lower.

The estimate is a *lower bound* on a float32 training step, so only configurations that
cannot possibly fit are refused:

* the model's state: weights, gradients and AdamW's two moments, 16 bytes per parameter;
* one micro-batch's activations kept for the backward pass: at least
  :data:`ACTIVATION_FLOATS` floats per position, channel and layer, plus two per logit.
  Measured on this code (``block_size`` 1024-4096, ``n_embd`` 128-256, 3-6 layers): 18-22
  floats per position, channel and layer, the logits included.

On a CPU the bound is compared with the machine's memory (the cgroup limit when lower);
a GPU's memory is only checked by running (:func:`out_of_memory`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from domaingpt.errors import ConfigError, DomainGPTError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from domaingpt.core.config import ModelSpec, RunConfig, TrainSpec

ACTIVATION_FLOATS = 12  # a lower bound: 18-22 measured, see the module documentation
LOWER = "lower train.batch_size, model.block_size or model.n_embd (or model.n_layer)"


@dataclass(frozen=True)
class StepMemory:
    """A lower bound on one training step's memory, in bytes."""

    parameters: int
    state_bytes: int
    activation_bytes: int

    @property
    def total(self) -> int:
        return self.state_bytes + self.activation_bytes


def parameter_count(model: ModelSpec, vocab_size: int) -> int:
    """The GPT's parameters (the output head shares the token embedding)."""
    C, L = model.n_embd, model.n_layer
    norms = 2 * C if model.bias else C  # a LayerNorm's gain (and bias)
    per_layer = 12 * C * C + (9 * C if model.bias else 0) + 2 * norms
    return vocab_size * C + model.block_size * C + L * per_layer + norms


def training_flops(model: ModelSpec, train: TrainSpec, vocab_size: int) -> float:
    """Floating-point operations of a whole training run, about: 6 per parameter per
    token (forward and backward), ``max_iters`` steps of ``grad_accum`` micro-batches of
    ``batch_size`` windows of ``block_size`` tokens. Evaluations are left out."""
    tokens = train.max_iters * train.grad_accum * train.batch_size * model.block_size
    return 6.0 * parameter_count(model, vocab_size) * tokens


def step_memory(model: ModelSpec, train: TrainSpec, vocab_size: int) -> StepMemory:
    """:class:`StepMemory` of one float32 step (one micro-batch of ``batch_size``)."""
    params = parameter_count(model, vocab_size)
    positions = train.batch_size * model.block_size
    floats = positions * (ACTIVATION_FLOATS * model.n_embd * model.n_layer + 2 * vocab_size)
    return StepMemory(params, 16 * params, 4 * floats)


def machine_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, or a lower cgroup limit."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def check_fits(cfg: RunConfig, vocab_size: int = 1, *, device_type: str = "cpu") -> StepMemory:
    """Refuse, before anything is written, a CPU training step that cannot fit in memory.

    ``vocab_size`` may be left at 1 before the vocabulary is known (a lower bound still).
    """
    need = step_memory(cfg.model, cfg.train, vocab_size)
    have = machine_memory() if device_type == "cpu" else None
    if have is not None and need.total > have:
        m, t = cfg.model, cfg.train
        raise ConfigError(
            f"a training step needs at least {_gib(need.total)} of memory ({need.parameters:,} "
            f"parameters: {_gib(need.state_bytes)} with gradients and AdamW state; "
            f"activations of batch_size {t.batch_size} x block_size {m.block_size} x n_embd "
            f"{m.n_embd} x {m.n_layer} layers: {_gib(need.activation_bytes)}), but this "
            f"machine has {_gib(have)}: {LOWER}"
        )
    return need


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation failure: CUDA's OutOfMemoryError, Python's MemoryError, or the CPU
    allocator's RuntimeError ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(error, MemoryError):
        return True
    oom = getattr(__import__("torch"), "OutOfMemoryError", None)
    if oom is not None and isinstance(error, oom):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower()
    )


@contextmanager
def out_of_memory(what: str, hint: str = LOWER) -> Iterator[None]:
    """Turn an allocation failure inside the block into one line saying what to lower."""
    try:
        yield
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DomainGPTError(f"out of memory {what} ({first[:160]}): {hint}") from None

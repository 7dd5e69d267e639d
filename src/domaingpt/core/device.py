"""Where the model runs: device auto-detection, the precision of each computation, and
what an out-of-memory error tells the user.

Precision policy. Two kinds of computation, one context manager each:

:func:`autocast`
    where lower precision is safe and pays: the training step and scoring windows (a
    loss averaged over many characters). bf16 autocast on CUDA GPUs that support it,
    float32 elsewhere: on a CPU bf16 matmuls are slower than float32 on most machines
    and change the numbers.
:func:`full_precision`
    where it is not safe: entropies, p(true), the logit lens, attention patterns,
    attributions and their gradients, integrated-gradients sums, sampled text. Autocast
    is switched off inside, so these stay float32 even when a caller wraps them in
    autocast (CKA is float64 and autocast never touches float64).

``DOMAINGPT_AUTOCAST`` overrides the policy of :func:`autocast`: ``off`` (float32
everywhere, also on a GPU), or ``DEVICE:DTYPE`` such as ``cpu:bfloat16``, which the tests
use to run the bf16 paths on a CPU and check that every float32-only quantity stays
float32 (``tests/core/test_precision.py``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from domaingpt.errors import ConfigError, DomainGPTError

AUTOCAST_ENV = "DOMAINGPT_AUTOCAST"
_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16}


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` prefers cuda, then mps, then cpu; an explicit name must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} asked for, but CUDA is not available here; use auto or cpu"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"device {name!r} asked for, but MPS is not available here; use auto or cpu"
        )
    return device


def autocast_override() -> tuple[str, torch.dtype | None] | None:
    """``DOMAINGPT_AUTOCAST`` read: None when unset, ``("", None)`` for ``off``, else the
    device type and dtype it names; any other value is a ConfigError."""
    override = os.environ.get(AUTOCAST_ENV, "").strip().lower()
    if not override:
        return None
    if override == "off":
        return "", None
    kind, _, dtype = override.partition(":")
    if dtype not in _DTYPES or kind not in ("cpu", "cuda", "mps"):
        raise ConfigError(
            f"{AUTOCAST_ENV}={override!r}: use off, or DEVICE:DTYPE like cpu:bfloat16 "
            f"(DEVICE: cpu, cuda or mps; DTYPE: {', '.join(_DTYPES)})"
        )
    return kind, _DTYPES[dtype]


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the training step and scoring on ``device`` (None: float32)."""
    override = autocast_override()
    if override is not None:
        kind, dtype = override
        return dtype if kind == device.type else None
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast where it is safe (training, scoring): see the module documentation."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def full_precision(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast off for ``device`` inside the block: a float32-only computation."""
    kind = torch.device(device).type
    if kind not in ("cpu", "cuda", "mps"):
        return contextlib.nullcontext()
    try:
        return torch.autocast(device_type=kind, enabled=False)
    except RuntimeError:  # a torch without autocast for this device type
        return contextlib.nullcontext()


class OutOfMemory(DomainGPTError):
    """The device ran out of memory; the message names the batch size to lower."""


def is_out_of_memory(error: BaseException) -> bool:
    """An out-of-memory error of any device (CUDA, MPS, or a CPU allocation)."""
    if isinstance(error, torch.cuda.OutOfMemoryError | MemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


@contextlib.contextmanager
def oom_hint(setting: str, value: int | None) -> Iterator[None]:
    """Turn an out-of-memory error inside the block into one line naming ``setting``."""
    try:
        yield
    except OutOfMemory:
        raise
    except Exception as e:
        if not is_out_of_memory(e):
            raise
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if value:
            fix = f"lower {setting} (it is {value}; try {max(1, value // 2)})"
        else:
            fix = f"lower {setting}"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OutOfMemory(f"out of memory ({first[:120]}): {fix}") from None

"""Where the model runs: device auto-detection and the matching autocast context.

CUDA trains in bf16 autocast (where supported), everything else in fp32: on a CPU,
bf16 matmuls are slower than fp32 on most machines and change the numbers.
"""

from __future__ import annotations

import contextlib

import torch

from domaingpt.errors import ConfigError


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


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA GPUs that support it; a no-op elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)

"""AdamW: ``torch.optim.AdamW``, fused where the device has the kernel, without the
compiler's start-up cost.

:class:`AdamW` *is* ``torch.optim.AdamW`` (``fused=True`` on CPU and CUDA, ``foreach``
elsewhere), so ``torch.optim.lr_scheduler`` and every other tool that expects a
``torch.optim.Optimizer`` takes it, and its updates and ``state_dict`` are torch's own.

One thing differs: torch wraps five of the optimizer's methods (``step``,
``zero_grad``, ``add_param_group``, ``state_dict``, ``load_state_dict``) in decorators
whose first call imports ``torch._dynamo``, a large part of a CPU run's start-up, for
a compiler that a CPU run never uses. The decorators only
matter while dynamo traces the optimizer, and dynamo cannot be tracing anything before
it has been imported; so while ``torch._dynamo`` is not imported, :class:`AdamW` calls
the function each decorator wraps (``__wrapped__``, which ``functools.wraps`` sets), in
``torch.no_grad`` for ``step`` as torch's decorator does. Once dynamo is imported (a run
with ``train.compile``), or where a torch version keeps no ``__wrapped__``, torch's
decorated methods run unchanged.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import torch

#: Devices where ``torch.optim.AdamW(fused=True)`` runs (in every torch this package
#: supports); elsewhere the ``foreach`` implementation.
FUSED_DEVICES = ("cpu", "cuda")


def fused_available(device: torch.device) -> bool:
    return device.type in FUSED_DEVICES


def _dynamo_imported() -> bool:
    return "torch._dynamo" in sys.modules


def _undecorated(method: Callable[..., Any], *, no_grad: bool = False) -> Callable[..., Any]:
    """``method`` as torch defines it, but calling the function its decorator wraps while
    ``torch._dynamo`` is not imported (see the module's docstring)."""
    plain = getattr(method, "__wrapped__", None)
    if plain is None:
        return method

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        if _dynamo_imported():
            return method(*args, **kwargs)
        if no_grad:
            with torch.no_grad():
                return plain(*args, **kwargs)
        return plain(*args, **kwargs)

    return call


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW`` over parameter groups (``params``, ``weight_decay``; ``lr``
    set per step by the trainer), torch's defaults otherwise (eps 1e-8, no amsgrad, no
    maximize); fused on ``device`` where :func:`fused_available`, else ``foreach``."""

    def __init__(
        self,
        groups: list[dict[str, Any]],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        *,
        device: torch.device | str = "cpu",
    ) -> None:
        fused = fused_available(torch.device(device))
        super().__init__(groups, lr=lr, betas=betas, fused=fused, foreach=not fused)

    step = _undecorated(torch.optim.AdamW.step, no_grad=True)
    zero_grad = _undecorated(torch.optim.Optimizer.zero_grad)
    add_param_group = _undecorated(torch.optim.Optimizer.add_param_group)
    state_dict = _undecorated(torch.optim.Optimizer.state_dict)
    load_state_dict = _undecorated(torch.optim.Optimizer.load_state_dict)


def make_adamw(
    groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], device: torch.device
) -> AdamW:
    """:class:`AdamW` for parameters on ``device``."""
    return AdamW(groups, lr=lr, betas=betas, device=device)

"""AdamW as ``torch.optim.AdamW(fused=True)`` computes it, without ``torch.optim``.

Why not ``torch.optim``: every one of its optimizers imports ``torch._dynamo`` on first
use (their methods are wrapped by ``torch._disable_dynamo``), 1.3 s of a CPU run's
start-up for a compiler that a CPU run never uses. This class calls the same fused kernel
(``torch._fused_adamw_``) with the same arguments in the same order, so its updates are
bitwise those of ``torch.optim.AdamW(fused=True)`` (a test compares them), and its
``state_dict`` has the same layout (a resumable checkpoint written by either loads into
the other). Where the fused kernel is missing, :func:`make_adamw` returns torch's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

#: Devices ``torch._fused_adamw_`` runs on (in every torch this package supports).
FUSED_DEVICES = ("cpu", "cuda")


def fused_available(device: torch.device) -> bool:
    return device.type in FUSED_DEVICES and hasattr(torch, "_fused_adamw_")


class AdamW:
    """AdamW over parameter groups (``params``, ``weight_decay``; ``lr`` set per step by the
    trainer), with torch's defaults: eps 1e-8, no amsgrad, no maximize."""

    def __init__(
        self,
        groups: list[dict[str, Any]],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": 0.0}
        self.param_groups = [{**defaults, **g, "params": list(g["params"])} for g in groups]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def _params(self) -> Iterable[torch.Tensor]:
        for group in self.param_groups:
            yield from group["params"]

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p not in self.state:  # lazily, as torch: step on the parameter's device
                    self.state[p] = {
                        "step": torch.zeros((), dtype=torch.float32, device=p.device),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
                    }
            states = [self.state[p] for p in params]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = group["betas"]
            torch._fused_adamw_(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                steps,
                amsgrad=False,
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                maximize=False,
                grad_scale=None,
                found_inf=None,
            )

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self._params():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {step, exp_avg, exp_avg_sq}}, "param_groups": [...]}``, the
        indices numbering the parameters group by group, as torch's optimizers do."""
        index = {p: i for i, p in enumerate(self._params())}
        state = {index[p]: dict(s) for p, s in self.state.items()}
        groups, start = [], 0
        for g in self.param_groups:
            n = len(g["params"])
            groups.append({**{k: v for k, v in g.items() if k != "params"}})
            groups[-1]["params"] = list(range(start, start + n))
            start += n
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Moments and step counts from :meth:`state_dict` (or torch's AdamW's), cast to
        each parameter's device and dtype as torch does (``step`` stays float32)."""
        params = list(self._params())
        self.state = {}
        for idx, values in sd["state"].items():
            p = params[int(idx)]
            self.state[p] = {
                key: value.to(device=p.device, dtype=torch.float32 if key == "step" else p.dtype)
                for key, value in values.items()
            }


def make_adamw(
    groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], device: torch.device
) -> AdamW | torch.optim.AdamW:
    """:class:`AdamW` where the fused kernel runs, else ``torch.optim.AdamW`` (unfused)."""
    if fused_available(device):
        return AdamW(groups, lr=lr, betas=betas)
    return torch.optim.AdamW(groups, lr=lr, betas=betas)

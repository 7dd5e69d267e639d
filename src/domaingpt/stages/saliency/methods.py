"""The attribution methods: one score per input character of a prompt.

The quantity explained is ``f(x) = log p(true next character | prompt)``, read at the
prompt's last position. Each method returns one score per input character, computed on
the token embeddings ``e`` (``model.embed``) with the position embeddings left in place
(``model(inputs_embeds=e)``):

``grad_norm``
    ``||∂f/∂e_i||_2``: the study's method. Unsigned: how sensitive ``f`` is to
    character ``i``, not in which direction.
``input_x_grad``
    ``Σ_d e_id · ∂f/∂e_id``: the first-order estimate of what removing ``e_i`` does.
``integrated_gradients``
    ``Σ_d e_id · ∫_0^1 ∂f/∂e_id(α·e) dα``: the path integral from a baseline of zero token
    embeddings (the prompt's *positions* are kept, its *characters* removed), computed by
    Gauss–Legendre quadrature (``ig_steps`` nodes; ``riemann_midpoint`` and
    ``riemann_trapezoid`` are also available). Completeness ``Σ_i a_i = f(x) − f(baseline)``
    holds up to quadrature error; every result carries its ``delta`` (the gap). The path
    can cross a sharp transition (an attention pattern switching) that 32 nodes miss, so
    prompts whose gap exceeds ``ig_tolerance`` (0.01 nats) are integrated again with 4×
    the steps, up to ``ig_max_steps`` (512); ``completeness.csv`` reports the gaps and
    how many prompts needed more steps.

``occlusion``
    ``f(x) − f(x with character i replaced)``: the perturbation method the gradient
    methods are checked against (Captum's and inseq's ``Occlusion`` with a window of one
    character). The baseline is the vocabulary's ``<unk>`` (another character can be
    given); the saliency stage runs it with ``<unk>`` and, separately, a space
    (:mod:`.agreement`).

The classes (:class:`GradientNorm`, :class:`InputXGradient`, :class:`IntegratedGradients`,
:class:`Occlusion`) follow Captum's shape: construct with the model, call ``attribute(ids, target)``. They are
batched: one forward and one backward pass serve a whole batch of prompts (a prompt's
prediction depends only on its own embeddings, so the gradient of the batch's summed
``f`` holds every prompt's gradient). ``benchmarks/bench_saliency.py`` checks the values
against Captum's ``Saliency`` and measures the speed-up.

Each method keeps the ``f(x)`` its own forward pass computed (``last_log_p``; IG also
``f(0)``, ``last_f0``), so :func:`attribute_methods` reads ``log p(true)`` from there
instead of running the model again, and gives ``grad_norm`` and ``input_x_grad`` on one
model one shared gradient (they differ only in what they do with it).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from domaingpt.context.prompts import PromptSet
from domaingpt.core.device import full_precision
from domaingpt.data.vocab import UNK_ID
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.model.gpt import GPT


def target_log_prob(
    model: GPT, embeds: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """``log p(target | prompt)`` at each prompt's last position, from token embeddings
    (float32 on any device: attributions and their gradients are never autocast)."""
    with full_precision(embeds.device):
        logits, _ = model(inputs_embeds=embeds, at=lengths - 1)
    rows = torch.arange(embeds.shape[0], device=embeds.device)
    return F.log_softmax(logits.float(), dim=-1)[rows, targets]


def _lengths(ids: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is None:
        return torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long, device=ids.device)
    return lengths.to(ids.device)


def _mask(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    pos = torch.arange(values.shape[1], device=values.device)
    return values * (pos.unsqueeze(0) < lengths.unsqueeze(1))


class Attribution:
    """Base class: ``attribute(ids (B, T), target (B,), lengths=None) -> (B, T)`` scores."""

    name = ""
    signed = True

    def __init__(self, model: GPT) -> None:
        self.model = model
        # f(x) per prompt of the last ``attribute`` call, from the method's own forward pass
        self.last_log_p: torch.Tensor | None = None

    def _gradient(
        self, embeds: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``f`` and ``∂f/∂embeds`` for a batch: one forward, one backward."""
        with torch.enable_grad():
            e = embeds.detach().requires_grad_(True)
            f = target_log_prob(self.model, e, lengths, targets)
            (grad,) = torch.autograd.grad(f.sum(), e)
        return f.detach(), grad

    def attribute(
        self, ids: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError


class _PlainGradient(Attribution):
    """A method computed from ``∂f/∂e`` at the prompt itself (one forward, one backward)."""

    def attribute(
        self, ids: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        lengths = _lengths(ids, lengths)
        embeds = self.model.embed(ids).detach()
        self.last_log_p, grad = self._gradient(embeds, lengths, target)
        return self.from_gradient(embeds, grad, lengths)

    def from_gradient(
        self, embeds: torch.Tensor, grad: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        """The scores from the embeddings and ``∂f/∂embeds`` (B, T, C)."""
        raise NotImplementedError


class GradientNorm(_PlainGradient):
    """L2 norm of the gradient of ``log p(target)`` w.r.t. each character's embedding."""

    name = "grad_norm"
    signed = False

    def from_gradient(
        self, embeds: torch.Tensor, grad: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        return _mask(grad.norm(dim=-1), lengths)


class InputXGradient(_PlainGradient):
    """Embedding × gradient, summed over the embedding dimensions."""

    name = "input_x_grad"

    def from_gradient(
        self, embeds: torch.Tensor, grad: torch.Tensor, lengths: torch.Tensor
    ) -> torch.Tensor:
        return _mask((embeds * grad).sum(-1), lengths)


def quadrature(n_steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``α`` in (0, 1] and weights summing to 1 for ``∫_0^1 g(α) dα``."""
    if n_steps < 1:
        raise DomainGPTError(f"integrated gradients needs at least 1 step, got {n_steps}")
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n_steps)
        return (x + 1) / 2, w / 2
    if method == "riemann_midpoint":
        return (np.arange(n_steps) + 0.5) / n_steps, np.full(n_steps, 1.0 / n_steps)
    if method == "riemann_trapezoid":
        if n_steps < 2:
            raise DomainGPTError("the trapezoid rule needs at least 2 steps")
        w = np.full(n_steps, 1.0 / (n_steps - 1))
        w[[0, -1]] /= 2
        return np.linspace(0, 1, n_steps), w
    raise DomainGPTError(
        f"unknown integration method {method!r}; use gausslegendre, riemann_midpoint or "
        "riemann_trapezoid"
    )


class IntegratedGradients(Attribution):
    """Integrated gradients from zero token embeddings (positions kept), batched over
    prompts and integration steps (``internal_batch_size`` rows per forward pass).

    With ``tolerance`` set, prompts whose completeness gap ``|Σ a − (f(x) − f(0))|``
    exceeds it are integrated again with 4× the steps, up to ``max_steps``: the path
    from the baseline can cross a sharp transition (an attention pattern switching) that
    a fixed small number of nodes misses. ``last_delta`` and ``last_steps`` hold the gap
    and the steps used per prompt, ``last_f0`` the baseline's ``f(0)``.
    """

    name = "integrated_gradients"

    def __init__(
        self,
        model: GPT,
        n_steps: int = 32,
        method: str = "gausslegendre",
        internal_batch_size: int = 512,
        tolerance: float | None = None,
        max_steps: int = 512,
    ) -> None:
        super().__init__(model)
        quadrature(n_steps, method)
        self.n_steps = n_steps
        self.method = method
        self.internal_batch_size = max(1, internal_batch_size)
        self.tolerance = tolerance
        self.max_steps = max(max_steps, n_steps)
        self.last_delta: torch.Tensor | None = None
        self.last_steps: torch.Tensor | None = None
        self.last_f0: torch.Tensor | None = None

    def _integrate(
        self, ids: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor, n_steps: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attributions, completeness gaps, ``f(x)`` and ``f(0)`` with ``n_steps`` nodes."""
        nodes, node_weights = quadrature(n_steps, self.method)
        embeds = self.model.embed(ids).detach()
        B = embeds.shape[0]
        shape = embeds.shape[1:]
        total = torch.zeros_like(embeds)
        per_pass = max(1, self.internal_batch_size // B)
        for lo in range(0, n_steps, per_pass):
            alphas = torch.tensor(
                nodes[lo : lo + per_pass], dtype=embeds.dtype, device=embeds.device
            )
            weights = torch.tensor(
                node_weights[lo : lo + per_pass], dtype=embeds.dtype, device=embeds.device
            )
            S = len(alphas)
            path = (alphas.view(S, 1, 1, 1) * embeds.unsqueeze(0)).reshape(S * B, *shape)
            _, grad = self._gradient(path, lengths.repeat(S), target.repeat(S))
            total += (weights.view(S, 1, 1, 1) * grad.view(S, B, *shape)).sum(0)
        attr = _mask((embeds * total).sum(-1), lengths)
        with torch.no_grad():
            f_x = target_log_prob(self.model, embeds, lengths, target)
            f_0 = target_log_prob(self.model, torch.zeros_like(embeds), lengths, target)
        return attr, attr.sum(-1) - (f_x - f_0), f_x, f_0

    def attribute(
        self,
        ids: torch.Tensor,
        target: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        return_convergence_delta: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        lengths = _lengths(ids, lengths)
        attr, delta, self.last_log_p, self.last_f0 = self._integrate(
            ids, target, lengths, self.n_steps
        )
        steps = torch.full((ids.shape[0],), self.n_steps, dtype=torch.long)
        n = self.n_steps
        while self.tolerance is not None and n < self.max_steps:
            bad = (delta.abs() > self.tolerance).nonzero().squeeze(1)
            if len(bad) == 0:
                break
            n = min(4 * n, self.max_steps)
            attr[bad], delta[bad], _, _ = self._integrate(ids[bad], target[bad], lengths[bad], n)
            steps[bad.cpu()] = n
        self.last_delta, self.last_steps = delta, steps
        return (attr, delta) if return_convergence_delta else attr


class Occlusion(Attribution):
    """The drop in ``log p(true)`` when one character is replaced by a baseline character.

    ``a_i = f(x) − f(x with character i replaced by baseline_id)``: positive when the
    character supports the true next character. No gradient: every position of every
    prompt is one forward pass of a variant prompt, ``batch_size`` variants at a time
    (the last block only at the prompt's last position). A character equal to the
    baseline scores exactly 0 (its variant is the prompt itself).
    """

    name = "occlusion"
    signed = True

    def __init__(self, model: GPT, baseline_id: int = UNK_ID, batch_size: int = 128) -> None:
        super().__init__(model)
        self.baseline_id = baseline_id
        self.batch_size = max(1, batch_size)

    @torch.no_grad()
    def attribute(
        self, ids: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        lengths = _lengths(ids, lengths)
        B, T = ids.shape
        f = target_log_prob(self.model, self.model.embed(ids), lengths, target)
        self.last_log_p = f
        valid = torch.arange(T, device=ids.device)[None, :] < lengths[:, None]
        rows, pos = (valid & (ids != self.baseline_id)).nonzero(as_tuple=True)
        drops = torch.zeros(B, T, dtype=f.dtype, device=ids.device)
        for lo in range(0, len(rows), self.batch_size):
            r, p = rows[lo : lo + self.batch_size], pos[lo : lo + self.batch_size]
            variant = ids[r].clone()
            variant[torch.arange(len(r), device=ids.device), p] = self.baseline_id
            lp = target_log_prob(self.model, self.model.embed(variant), lengths[r], target[r])
            drops[r, p] = f[r] - lp
        return drops


METHODS: dict[str, type[Attribution]] = {
    "grad_norm": GradientNorm,
    "input_x_grad": InputXGradient,
    "integrated_gradients": IntegratedGradients,
    "occlusion": Occlusion,
}


def check_methods(names: Sequence[str]) -> list[str]:
    """The method names, or an error naming the unknown one and the known ones."""
    out = []
    for name in names:
        name = name.strip()
        if name not in METHODS:
            close = difflib.get_close_matches(name, list(METHODS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(
                f"unknown saliency method {name!r}: {hint}known methods are {', '.join(METHODS)}"
            )
        out.append(name)
    if not out:
        raise ConfigError(f"no saliency method given; known methods are {', '.join(METHODS)}")
    return list(dict.fromkeys(out))


def make_method(
    name: str,
    model: GPT,
    *,
    ig_steps: int = 32,
    ig_method: str = "gausslegendre",
    ig_tolerance: float | None = 0.01,
    ig_max_steps: int = 512,
) -> Attribution:
    """A method object by name (see :data:`METHODS`)."""
    (name,) = check_methods([name])
    if name == "integrated_gradients":
        return IntegratedGradients(
            model, ig_steps, ig_method, tolerance=ig_tolerance, max_steps=ig_max_steps
        )
    return METHODS[name](model)


@dataclass
class PromptAttributions:
    """Scores ``(N, T)`` (0 on padding), ``log p(true)`` and, for IG, the completeness gap."""

    values: np.ndarray
    log_p: np.ndarray
    delta: np.ndarray | None
    steps: np.ndarray | None = None  # IG: integration steps used per prompt
    f_0: np.ndarray | None = None  # IG: log p(true) from the baseline (zero embeddings)

    def rows(self, index: Sequence[int], width: int) -> PromptAttributions:
        """The prompts at ``index`` (their scores cut to ``width`` columns)."""
        idx = list(index)

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        values = self.values[idx, :width]
        return PromptAttributions(
            values, self.log_p[idx], pick(self.delta), pick(self.steps), pick(self.f_0)
        )


def attribute_prompts(
    method: Attribution,
    prompts: PromptSet,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> PromptAttributions:
    """Run ``method`` over a prompt set in batches of ``batch_size`` prompts."""
    return attribute_methods([method], prompts, batch_size=batch_size, device=device)[0]


def attribute_methods(
    methods: Sequence[Attribution],
    prompts: PromptSet,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> list[PromptAttributions]:
    """Run each method over a prompt set in batches of ``batch_size`` prompts.

    ``log p(true)`` is the ``f(x)`` of each method's own forward pass; ``grad_norm`` and
    ``input_x_grad`` on the same model share one gradient per batch (the same numbers as
    computing it twice: the same forward and backward on the same batch).
    """
    N, T = len(prompts), prompts.max_length
    out = []
    for method in methods:
        method.model.eval()
        is_ig = isinstance(method, IntegratedGradients)
        out.append(
            PromptAttributions(
                np.zeros((N, T)),
                np.zeros(N),
                np.zeros(N) if is_ig else None,
                np.zeros(N, dtype=np.int64) if is_ig else None,
                np.zeros(N) if is_ig else None,
            )
        )
    for lo in range(0, N, batch_size):
        index = list(range(lo, min(lo + batch_size, N)))
        ids, lens, targets, _ = prompts.tensors(device, index)
        rows = slice(lo, lo + len(index))
        shared: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for method, res in zip(methods, out, strict=True):
            method.last_log_p = None
            with full_precision(ids.device):  # the methods' sums (IG's too) in float32
                if isinstance(method, _PlainGradient):
                    # one gradient per model and batch, whichever plain method asks first
                    if id(method.model) not in shared:
                        embeds = method.model.embed(ids).detach()
                        f, grad = method._gradient(embeds, lens, targets)
                        shared[id(method.model)] = (embeds, f, grad)
                    embeds, f, grad = shared[id(method.model)]
                    attr, method.last_log_p = method.from_gradient(embeds, grad, lens), f
                else:
                    attr = method.attribute(ids, targets, lens)
            res.values[rows, : ids.shape[1]] = attr.detach().double().cpu().numpy()
            lp = method.last_log_p
            if lp is None:  # a method without its own f(x)
                with torch.no_grad():
                    lp = target_log_prob(method.model, method.model.embed(ids), lens, targets)
            res.log_p[rows] = lp.detach().double().cpu().numpy()
            if isinstance(method, IntegratedGradients):
                res.delta[rows] = method.last_delta.double().cpu().numpy()
                res.steps[rows] = method.last_steps.cpu().numpy()
                res.f_0[rows] = method.last_f0.double().cpu().numpy()
    return out


@torch.no_grad()
def baseline_log_p(
    model: GPT, prompts: PromptSet, device: torch.device | str, batch_size: int
) -> np.ndarray:
    """``f(baseline)`` per prompt: ``log p(true)`` from zero token embeddings, the start of
    the integrated-gradients path (completeness is measured against ``f(x) − f(0)``)."""
    out = np.zeros(len(prompts))
    for lo in range(0, len(prompts), batch_size):
        index = list(range(lo, min(lo + batch_size, len(prompts))))
        ids, lens, targets, _ = prompts.tensors(device, index)
        zero = torch.zeros_like(model.embed(ids))
        out[lo : lo + len(index)] = (
            target_log_prob(model, zero, lens, targets).double().cpu().numpy()
        )
    return out

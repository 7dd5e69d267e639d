"""Linear CKA: how alike two representations of the same inputs are, from 0 to 1.

Centered kernel alignment (Kornblith et al., 2019) compares two feature matrices
``X (n, d_x)`` and ``Y (n, d_y)`` of the same ``n`` inputs through their linear Gram
matrices ``K = XXᵀ`` and ``L = YYᵀ``::

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L))

It is 1 for the same representation, unchanged by rotating (any orthogonal transform)
or scaling either side, so it compares models whose features live in different bases.

**Which estimator.** The plain estimator (centered Frobenius products) is biased upwards
by about ``d / n``: two independent random representations of 1,000 tokens in 128
dimensions score ~0.1, not 0. domaingpt uses the *debiased* estimator (Nguyen, Raghu &
Kornblith, 2021): HSIC is replaced by its unbiased estimator (Song et al., 2012), whose
expectation for independent features is 0 at any ``n``::

    HSIC₁(K, L) = [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3))

with ``K̃`` the Gram matrix with its diagonal set to 0. Every term is computed in feature
space (``XᵀY`` and a few vectors: no ``n × n`` matrix) from sums over the inputs, so the
same sums over *groups* of inputs (the tokens of one prompt) give the leave-one-group-out
values of the jackknife interval (:func:`cka_jackknife`) at the cost of a few estimates.
``linear_cka(..., debiased=False)`` gives the plain estimator (features centered first).
Computed in float64 with torch (its matrix products respect the caller's thread count).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from domaingpt.core.statistics import t_quantile


def _hsic(
    x: torch.Tensor,
    y: torch.Tensor,
    c: torch.Tensor,
    px: torch.Tensor,
    py: torch.Tensor,
    n: torch.Tensor,
) -> torch.Tensor:
    """HSIC₁ of ``x`` and ``y`` (``c = XᵀY``) with each group left out in turn, ``(G,)``.

    ``px``, ``py`` ``(G, m, d)`` are the groups' rows, zero-padded; ``n`` the inputs left.
    Every term of HSIC₁ is a sum over inputs: the total less the group's part. The parts
    with ``XᵀY`` are expanded (``‖C − C_g‖² = ‖C‖² − 2⟨C, C_g⟩ + ‖C_g‖²``,
    ``uᵀC_g v = Σ_{i∈g}(u·x_i)(y_i·v)``), so nothing of size ``G × d × d`` is formed.
    """
    a, b = (x * x).sum(1), (y * y).sum(1)
    pa, pb = (px * px).sum(2), (py * py).sum(2)  # (G, m), 0 on padding
    a_ = a.sum() - pa.sum(1)
    b_ = b.sum() - pb.sum(1)
    ab_ = a @ b - (pa * pb).sum(1)
    s1 = x.sum(0) - px.sum(1)  # (G, d_x)
    s2 = y.sum(0) - py.sum(1)
    w1 = a @ y - torch.einsum("gm,gmd->gd", pa, py)  # Σ ||x||² y
    w2 = b @ x - torch.einsum("gm,gmd->gd", pb, px)  # Σ ||y||² x
    inner = ((px @ c) * py).sum((1, 2))  # ⟨C, C_g⟩
    gram = ((px @ px.transpose(1, 2)) * (py @ py.transpose(1, 2))).sum((1, 2))  # ‖C_g‖²
    trace = (c * c).sum() - 2 * inner + gram - ab_
    k1 = (s1 * s1).sum(1) - a_
    l1 = (s2 * s2).sum(1) - b_
    u = torch.einsum("gmd,gd->gm", px, s1)
    v = torch.einsum("gmd,gd->gm", py, s2)
    kl1 = ((s1 @ c) * s2).sum(1) - (u * v).sum(1) - (w1 * s2).sum(1) - (w2 * s1).sum(1) + ab_
    return (trace + k1 * l1 / ((n - 1) * (n - 2)) - 2.0 * kl1 / (n - 2)) / (n * (n - 3))


def _prepare(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"CKA needs (n, d) matrices of the same n, got {x.shape} and {y.shape}")
    # Centering changes neither estimator's value; it keeps the sums well conditioned.
    return torch.from_numpy(x - x.mean(0)), torch.from_numpy(y - y.mean(0))


def _padded(values: torch.Tensor, index: np.ndarray, counts: np.ndarray) -> torch.Tensor:
    """``(G + 1, m, d)``: an empty group (nothing left out), then each group's rows,
    padded with zero rows (which add nothing to any sum) to the largest group."""
    order = np.argsort(index, kind="stable")
    slot = np.arange(len(index)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = torch.zeros(
        len(counts) + 1, int(counts.max(initial=0)), values.shape[1], dtype=values.dtype
    )
    out[torch.from_numpy(index[order] + 1), torch.from_numpy(slot)] = values[
        torch.from_numpy(order)
    ]
    return out


def _debiased(x: torch.Tensor, y: torch.Tensor, index: np.ndarray, groups: int) -> np.ndarray:
    """Debiased CKA of all inputs, then with each of ``groups`` groups left out."""
    counts = np.bincount(index, minlength=groups)
    px, py = _padded(x, index, counts), _padded(y, index, counts)
    n = torch.from_numpy(len(x) - np.concatenate([[0], counts]).astype(np.float64))
    xy = _hsic(x, y, x.T @ y, px, py, n)
    xx = _hsic(x, x, x.T @ x, px, px, n)
    yy = _hsic(y, y, y.T @ y, py, py, n)
    ok = (n >= 4) & (xx > 0) & (yy > 0)
    cka = xy / torch.sqrt(torch.where(ok, xx * yy, torch.ones_like(xx)))
    return torch.where(ok, cka, torch.full_like(cka, math.nan)).numpy()


def _plain(x: torch.Tensor, y: torch.Tensor) -> float:
    den = float(torch.linalg.norm(x.T @ x) * torch.linalg.norm(y.T @ y))
    return float(torch.linalg.norm(x.T @ y) ** 2) / den if den > 0 else math.nan


def linear_cka(x: np.ndarray, y: np.ndarray, *, debiased: bool = True) -> float:
    """Linear CKA of two representations ``(n, d_x)`` and ``(n, d_y)`` of the same ``n``
    inputs (row ``i`` of each is input ``i``); NaN with fewer than 4 inputs (debiased)."""
    tx, ty = _prepare(x, y)
    if not debiased:
        return _plain(tx, ty)
    return float(_debiased(tx, ty, np.zeros(0, dtype=np.int64), 0)[0])


def cka_jackknife(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Debiased CKA of all inputs, and with each group left out in turn.

    ``groups`` labels each input (the prompt a token comes from). Returns the estimate,
    the sorted group labels and the leave-one-group-out values, for
    :func:`jackknife_ci` (groups, not tokens, are the unit: tokens of one prompt share
    their context). Every group is left out at once, from the sums, at the cost of a
    few estimates rather than one per group.
    """
    tx, ty = _prepare(x, y)
    labels, index = np.unique(np.asarray(groups), return_inverse=True)
    values = _debiased(tx, ty, index.astype(np.int64), len(labels))
    return float(values[0]), labels, values[1:]


def jackknife_ci(estimate: float, loo: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """``estimate ± t·SE`` with the jackknife standard error of the leave-one-out values
    ``loo`` (``SE² = (G−1)/G · Σ (θ₍ᵢ₎ − θ̄)²``) and Student's t with G − 1 degrees of
    freedom (the usual jackknife reference); NaN with fewer than two."""
    loo = np.asarray(loo, dtype=np.float64)
    loo = loo[np.isfinite(loo)]
    g = len(loo)
    if g < 2 or not math.isfinite(estimate):
        return (math.nan, math.nan)
    se = math.sqrt((g - 1) / g * float(((loo - loo.mean()) ** 2).sum()))
    half = t_quantile(0.5 + confidence / 2, g - 1) * se
    return (estimate - half, estimate + half)

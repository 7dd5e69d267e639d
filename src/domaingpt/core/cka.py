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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from domaingpt.core.statistics import Z95


@dataclass
class _Sums:
    """The sums over inputs that HSIC₁(K, L), HSIC₁(K, K) and HSIC₁(L, L) are made of."""

    n: float
    xy: np.ndarray  # XᵀY
    xx: np.ndarray  # XᵀX
    yy: np.ndarray  # YᵀY
    sx: np.ndarray  # Σ x_i
    sy: np.ndarray  # Σ y_i
    a: np.ndarray  # Σ ||x_i||²
    b: np.ndarray  # Σ ||y_i||²
    aa: np.ndarray  # Σ ||x_i||⁴
    bb: np.ndarray
    ab: np.ndarray  # Σ ||x_i||² ||y_i||²
    ax: np.ndarray  # Σ ||x_i||² x_i
    ay: np.ndarray  # Σ ||x_i||² y_i
    bx: np.ndarray  # Σ ||y_i||² x_i
    by: np.ndarray  # Σ ||y_i||² y_i

    @classmethod
    def of(cls, x: np.ndarray, y: np.ndarray) -> _Sums:
        """Sums over the rows of ``x (n, d_x)`` and ``y (n, d_y)``."""
        a, b = (x * x).sum(-1), (y * y).sum(-1)
        t = np.swapaxes
        return cls(
            float(x.shape[-2]),
            t(x, -1, -2) @ y,
            t(x, -1, -2) @ x,
            t(y, -1, -2) @ y,
            x.sum(-2),
            y.sum(-2),
            a.sum(-1),
            b.sum(-1),
            (a * a).sum(-1),
            (b * b).sum(-1),
            (a * b).sum(-1),
            np.einsum("...m,...md->...d", a, x),
            np.einsum("...m,...md->...d", a, y),
            np.einsum("...m,...md->...d", b, x),
            np.einsum("...m,...md->...d", b, y),
        )


def _hsic(
    n: np.ndarray | float,
    c: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    a1: np.ndarray,
    a2: np.ndarray,
    a12: np.ndarray,
    w1: np.ndarray,
    w2: np.ndarray,
) -> np.ndarray:
    """HSIC₁ from feature-space sums: ``c = X₁ᵀX₂``, ``s`` the sums of the features, ``a``
    the sums of squared norms, ``a12 = Σ ||x₁||²||x₂||²``, ``w1 = Σ ||x₁||² x₂`` and
    ``w2 = Σ ||x₂||² x₁`` (what ``1ᵀK̃L̃1`` needs); any leading axes broadcast."""
    trace = (c * c).sum((-1, -2)) - a12
    k1 = (s1 * s1).sum(-1) - a1
    l1 = (s2 * s2).sum(-1) - a2
    kl1 = np.einsum("...d,...de,...e->...", s1, c, s2) - (w1 * s2).sum(-1) - (w2 * s1).sum(-1)
    kl1 = kl1 + a12
    return (trace + k1 * l1 / ((n - 1) * (n - 2)) - 2.0 * kl1 / (n - 2)) / (n * (n - 3))


def _debiased(s: _Sums) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):  # fewer than 4 inputs: NaN
        xy = _hsic(s.n, s.xy, s.sx, s.sy, s.a, s.b, s.ab, s.ay, s.bx)
        xx = _hsic(s.n, s.xx, s.sx, s.sx, s.a, s.a, s.aa, s.ax, s.ax)
        yy = _hsic(s.n, s.yy, s.sy, s.sy, s.b, s.b, s.bb, s.by, s.by)
        ok = (np.asarray(s.n) >= 4) & (xx > 0) & (yy > 0)
        return np.where(ok, xy / np.sqrt(np.where(ok, xx * yy, 1.0)), np.nan)


def _plain(s: _Sums) -> np.ndarray:
    n = np.asarray(s.n, dtype=np.float64)[..., None, None]

    def centered(c: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return c - u[..., :, None] * v[..., None, :] / n

    xy = centered(s.xy, s.sx, s.sy)
    xx = centered(s.xx, s.sx, s.sx)
    yy = centered(s.yy, s.sy, s.sy)
    den = np.sqrt((xx * xx).sum((-1, -2)) * (yy * yy).sum((-1, -2)))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (xy * xy).sum((-1, -2)) / np.where(den > 0, den, 1.0), np.nan)


def _prepare(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"CKA needs (n, d) matrices of the same n, got {x.shape} and {y.shape}")
    # Centering changes neither estimator's value; it keeps the sums well conditioned.
    return x - x.mean(0), y - y.mean(0)


def linear_cka(x: np.ndarray, y: np.ndarray, *, debiased: bool = True) -> float:
    """Linear CKA of two representations ``(n, d_x)`` and ``(n, d_y)`` of the same ``n``
    inputs (row ``i`` of each is input ``i``); NaN with fewer than 4 inputs (debiased)."""
    x, y = _prepare(x, y)
    s = _Sums.of(x, y)
    return float(_debiased(s) if debiased else _plain(s))


def _padded(values: np.ndarray, groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(G, m, d)``: each group's rows, padded with zero rows to the largest group."""
    index = np.searchsorted(labels, groups)
    counts = np.bincount(index, minlength=len(labels))
    order = np.argsort(index, kind="stable")
    slot = np.arange(len(groups)) - np.repeat(np.cumsum(counts) - counts, counts)
    out = np.zeros((len(labels), int(counts.max()), values.shape[1]))
    out[index[order], slot] = values[order]
    return out


def _hsic_loo(x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray, counts) -> np.ndarray:
    """HSIC₁ of ``x`` and ``y`` with each group left out in turn, ``(G,)``.

    ``px``, ``py`` are the groups' rows, zero-padded (:func:`_padded`). Every term of
    HSIC₁ is a total less the group's part; the parts that involve ``XᵀY`` are expanded
    (``‖C − C_g‖² = ‖C‖² − 2⟨C, C_g⟩ + ‖C_g‖²``, ``uᵀC_g v = Σ_{i∈g}(u·x_i)(y_i·v)``), so
    nothing of size ``G × d × d`` is ever formed.
    """
    c = x.T @ y
    a, b = (x * x).sum(1), (y * y).sum(1)
    pa, pb = (px * px).sum(2), (py * py).sum(2)  # (G, m), 0 on padding
    n = len(x) - counts
    a_ = a.sum() - pa.sum(1)
    b_ = b.sum() - pb.sum(1)
    ab_ = a @ b - (pa * pb).sum(1)
    s1 = x.sum(0) - px.sum(1)  # (G, d_x)
    s2 = y.sum(0) - py.sum(1)
    w1 = a @ y - np.einsum("gm,gmd->gd", pa, py)  # Σ ||x||² y
    w2 = b @ x - np.einsum("gm,gmd->gd", pb, px)  # Σ ||y||² x
    inner = ((px @ c) * py).sum((1, 2))  # ⟨C, C_g⟩
    gram = ((px @ px.transpose(0, 2, 1)) * (py @ py.transpose(0, 2, 1))).sum((1, 2))  # ‖C_g‖²
    trace = float((c * c).sum()) - 2 * inner + gram - ab_
    k1 = (s1 * s1).sum(1) - a_
    l1 = (s2 * s2).sum(1) - b_
    u = np.einsum("gmd,gd->gm", px, s1)
    v = np.einsum("gmd,gd->gm", py, s2)
    kl1 = ((s1 @ c) * s2).sum(1) - (u * v).sum(1) - (w1 * s2).sum(1) - (w2 * s1).sum(1) + ab_
    with np.errstate(divide="ignore", invalid="ignore"):
        return (trace + k1 * l1 / ((n - 1) * (n - 2)) - 2.0 * kl1 / (n - 2)) / (n * (n - 3))


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
    x, y = _prepare(x, y)
    groups = np.asarray(groups)
    labels, counts = np.unique(groups, return_counts=True)
    px, py = _padded(x, groups, labels), _padded(y, groups, labels)
    xy = _hsic_loo(x, y, px, py, counts)
    xx = _hsic_loo(x, x, px, px, counts)
    yy = _hsic_loo(y, y, py, py, counts)
    ok = (len(x) - counts >= 4) & (xx > 0) & (yy > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        loo = np.where(ok, xy / np.sqrt(np.where(ok, xx * yy, 1.0)), np.nan)
    return float(_debiased(_Sums.of(x, y))), labels, loo


def jackknife_ci(estimate: float, loo: np.ndarray, z: float = Z95) -> tuple[float, float]:
    """``estimate ± z·SE`` with the jackknife standard error of the leave-one-out values
    ``loo`` (``SE² = (G−1)/G · Σ (θ₍ᵢ₎ − θ̄)²``); NaN with fewer than two."""
    loo = np.asarray(loo, dtype=np.float64)
    loo = loo[np.isfinite(loo)]
    g = len(loo)
    if g < 2 or not math.isfinite(estimate):
        return (math.nan, math.nan)
    se = math.sqrt((g - 1) / g * float(((loo - loo.mean()) ** 2).sum()))
    return (estimate - z * se, estimate + z * se)

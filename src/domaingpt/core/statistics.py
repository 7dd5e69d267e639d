"""The statistics every stage uses, written once.

Intervals are 95 % unless asked otherwise; bootstraps are seeded, so an interval is a
deterministic function of the data. Distributions are compared in bits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist

import numpy as np

Z95 = 1.959963984540054
LOG2E = 1.0 / math.log(2.0)


def mean_ci(values: np.ndarray, z: float = Z95) -> dict[str, float]:
    """n, mean, sd and the normal-approximation 95 % CI (mean ± 1.96·sd/√n) of the finite
    ``values``; NaN interval for fewer than two. ``z`` widens it (:func:`bonferroni_z`)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return {"n": 0, "mean": np.nan, "std": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n > 1 else 0.0
    half = z * sd / math.sqrt(n) if n > 1 else np.nan
    return {"n": n, "mean": mean, "std": sd, "ci_low": mean - half, "ci_high": mean + half}


def welch_ci(a: np.ndarray, b: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """Difference of means ``mean(a) - mean(b)`` and its Welch normal 95 % interval."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = float(a.mean() - b.mean())
    se = math.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return diff, diff - z * se, diff + z * se


def bonferroni_z(tests: int, confidence: float = 0.95) -> float:
    """The normal quantile of a two-sided interval that keeps ``confidence`` over
    ``tests`` intervals at once (Bonferroni): 1.96 for one test, 2.64 for six."""
    alpha = (1.0 - confidence) / max(tests, 1)
    return NormalDist().inv_cdf(1.0 - alpha / 2)


def bootstrap_mean_ci(
    values: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap 95 % CI of the mean of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return (np.nan, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(v.mean()), float(lo), float(hi)


def bootstrap_ratio_ci(
    numerators: np.ndarray,
    denominators: np.ndarray,
    n_resamples: int = 1000,
    *,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``sum(num) / sum(den)``, resampling whole units.

    The loss of a text split is this ratio over windows (summed NLL / scored characters):
    windows, not characters, are the unit, since characters in one window share context.
    """
    n = len(numerators)
    if n_resamples <= 0 or n < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // n)  # bound the index matrix to ~16 MB
    for lo in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - lo)
        idx = rng.integers(0, n, size=(k, n))
        stats[lo : lo + k] = numerators[idx].sum(axis=1) / denominators[idx].sum(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign-test p-value of ``wins`` against ``losses`` (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1))
    return min(1.0, 2 * tail / 2**n)


def js_divergence_bits(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence in bits between rows of ``p`` and ``q`` (0 ≤ JS ≤ 1)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(a > 0, a * np.log2(a / m), 0.0)
        return terms.sum(-1)

    return np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, 1.0)


def js_divergence(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """JS divergence in bits of two distributions given as ``{outcome: weight}``.

    Weights need not be normalised; an outcome missing on one side has probability 0
    there. NaN when either side is empty.
    """
    keys = sorted(set(p) | set(q))
    a = np.array([p.get(k, 0.0) for k in keys], dtype=np.float64)
    b = np.array([q.get(k, 0.0) for k in keys], dtype=np.float64)
    if a.sum() <= 0 or b.sum() <= 0:
        return math.nan
    a, b = a / a.sum(), b / b.sum()
    m = 0.5 * (a + b)

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    return min(max(0.5 * kl(a) + 0.5 * kl(b), 0.0), 1.0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    # ties get the mean of their ranks
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    if len(values) < len(x):
        sums = np.zeros(len(values))
        np.add.at(sums, inverse, ranks)
        ranks = (sums / counts)[inverse]
    return ranks

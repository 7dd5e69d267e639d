"""The statistics every stage uses, written once.

Intervals are 95 % unless asked otherwise; intervals of a mean use Student's t with
n - 1 degrees of freedom (Welch's for a difference), not the normal quantile, since a
stage's means are over as few as 16 prompts and a claim's across-model mean over 2-5
models. Bootstraps are seeded, so an interval is a deterministic function of the data.
Distributions are compared in bits. The tests check these functions against scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

import numpy as np

Z95 = 1.959963984540054
LOG2E = 1.0 / math.log(2.0)


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified
    Lentz), converging for ``x < (a + 1) / (a + b + 2)``."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(df):
        return 1.0 - NormalDist().cdf(t)
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom (``df`` may be
    fractional, as Welch's is; infinite: the normal quantile)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level {q} is not in (0, 1)")
    if math.isinf(df) or df > 1e7:
        return NormalDist().inv_cdf(q)
    if q < 0.5:
        return -t_quantile(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_sf(hi, df) > 1.0 - q:  # bracket, then bisect: monotone and exact enough
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_sf(mid, df) > 1.0 - q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def t_test_p(mean: float, se: float, df: float) -> float:
    """Two-sided p-value of ``mean / se`` against zero under Student's t (1 for se 0 and
    mean 0, 0 for se 0 and mean not 0)."""
    if se == 0.0 or not math.isfinite(se):
        return 1.0 if mean == 0.0 else 0.0
    return min(1.0, 2.0 * t_sf(abs(mean / se), df))


def mean_ci(values: np.ndarray, confidence: float = 0.95) -> dict[str, float]:
    """n, mean, sd and the Student-t ``confidence`` interval (mean ± t·sd/√n, n - 1
    degrees of freedom) of the finite ``values``; NaN interval for fewer than two.
    :func:`bonferroni` widens it for several intervals read at once."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return {"n": 0, "mean": np.nan, "std": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n > 1 else 0.0
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n) if n > 1 else np.nan
    return {"n": n, "mean": mean, "std": sd, "ci_low": mean - half, "ci_high": mean + half}


def welch_ci(a: np.ndarray, b: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """Difference of means ``mean(a) - mean(b)`` and its Welch ``confidence`` interval
    (Student's t with the Welch–Satterthwaite degrees of freedom)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(0.5 + confidence / 2, df) * se
    return diff, diff - half, diff + half


def bonferroni(tests: int, confidence: float = 0.95) -> float:
    """The confidence of each of ``tests`` intervals that keeps ``confidence`` over all
    of them at once (Bonferroni): 0.95 for one test, 0.9917 for six."""
    return 1.0 - (1.0 - confidence) / max(tests, 1)


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


def first_to_last(wide: Any) -> tuple[Any, Any, dict[str, float]] | None:
    """The paired change from the first column of ``wide`` (rows: prompts, columns:
    iterations, a DataFrame) to its last: ``(first, last, mean_ci of last - first)``, or
    ``None`` without two columns or two finite pairs."""
    if wide.shape[1] < 2:
        return None
    first, last = wide.columns[0], wide.columns[-1]
    ci = mean_ci((wide[last] - wide[first]).to_numpy())
    return None if ci["n"] < 2 else (first, last, ci)


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
    return float(js_divergence_bits(a / a.sum(), b / b.sum()))


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

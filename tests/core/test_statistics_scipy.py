"""core.statistics against SciPy, the reference implementation of each statistic.

SciPy is in the ``test`` extra (part of ``dev``); off CI the tests skip without it.
"""

from __future__ import annotations

import importlib
import math
import os

import numpy as np
import pytest

from domaingpt.core import statistics as st


def need(module: str):
    """The test extra is part of ``[dev]``: on CI a missing one fails, elsewhere it skips."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


scipy_stats = need("scipy.stats")
scipy_special = need("scipy.special")
distance = need("scipy.spatial.distance")


@pytest.fixture
def samples() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [
        rng.normal(0.3, 1.2, 40),
        rng.exponential(2.0, 17),
        np.round(rng.normal(0, 1, 25), 1),  # ties
        np.array([1.0, 2.0]),
    ]


def test_student_t_distribution():
    for df in (1, 2, 3, 4.5, 15, 63, 1000):
        for q in (0.6, 0.975, 1 - 0.05 / 12):
            ours, theirs = st.t_quantile(q, df), scipy_stats.t.ppf(q, df)
            assert ours == pytest.approx(theirs, rel=1e-9), (q, df)
            assert st.t_quantile(1 - q, df) == pytest.approx(-theirs, rel=1e-9)
        for t in (-3.0, 0.0, 0.1, 2.5, 40.0):
            assert st.t_sf(t, df) == pytest.approx(scipy_stats.t.sf(t, df), rel=1e-9, abs=1e-15)
    assert st.t_quantile(0.975, math.inf) == pytest.approx(scipy_stats.norm.ppf(0.975))
    for a, b, x in ((0.5, 0.5, 0.3), (2.0, 7.5, 0.9), (30.0, 0.5, 0.99)):
        assert st.betainc(a, b, x) == pytest.approx(scipy_special.betainc(a, b, x), rel=1e-10)


def test_t_intervals_and_tests(samples):
    for v in samples:
        ci = st.mean_ci(v)
        ref = scipy_stats.ttest_1samp(v, 0.0)
        low, high = ref.confidence_interval(0.95)
        assert ci["n"] == len(v) and ci["std"] == pytest.approx(v.std(ddof=1), rel=1e-12)
        assert (ci["ci_low"], ci["ci_high"]) == pytest.approx((low, high), rel=1e-9, abs=1e-12)
        se = ci["std"] / math.sqrt(len(v))
        assert st.t_test_p(ci["mean"], se, len(v) - 1) == pytest.approx(ref.pvalue, rel=1e-9)
    # Bonferroni: each of 6 intervals at 1 - 0.05/6
    wide = st.mean_ci(samples[0], st.bonferroni(6))
    low, high = scipy_stats.ttest_1samp(samples[0], 0.0).confidence_interval(1 - 0.05 / 6)
    assert (wide["ci_low"], wide["ci_high"]) == pytest.approx((low, high), rel=1e-9)
    assert st.bonferroni(1) == 0.95 and st.bonferroni(6) == pytest.approx(1 - 0.05 / 6)
    assert math.isnan(st.mean_ci(np.array([3.0]))["ci_low"])


def test_welch_interval(samples):
    a, b = samples[0], samples[1]
    diff, low, high = st.welch_ci(a, b)
    ref = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert diff == pytest.approx(a.mean() - b.mean(), rel=1e-12)
    assert (low, high) == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)


def test_sign_test_is_the_exact_binomial_test():
    for wins, losses in [(0, 0), (1, 0), (3, 3), (9, 1), (2, 14), (20, 7), (50, 50), (0, 12)]:
        ours = st.sign_test(wins, losses)
        if wins + losses == 0:
            assert ours == 1.0
            continue
        theirs = scipy_stats.binomtest(wins, wins + losses, 0.5).pvalue
        assert ours == pytest.approx(theirs, rel=1e-12), (wins, losses)


def test_spearman(samples):
    rng = np.random.default_rng(3)
    for v in samples:
        w = v + rng.normal(0, 1, len(v))
        for other in (w, np.round(w), -v):
            assert st.spearman(v, other) == pytest.approx(
                scipy_stats.spearmanr(v, other).statistic, rel=1e-12, abs=1e-15
            )
    assert math.isnan(st.spearman(np.ones(5), np.arange(5.0)))  # SciPy: NaN with a warning


def test_percentile_bootstraps_draw_as_scipy_draws(samples):
    """Same generator, same draws (one (resamples, n) index matrix), same percentiles:
    SciPy's percentile bootstrap gives the very same interval."""
    for v in samples[:3]:
        mean, low, high = st.bootstrap_mean_ci(v, n_boot=2000, seed=11)
        res = scipy_stats.bootstrap(
            (v,),
            np.mean,
            n_resamples=2000,
            method="percentile",
            rng=np.random.default_rng(11),
            vectorized=True,
        )
        assert mean == pytest.approx(v.mean(), rel=1e-12)
        ci = res.confidence_interval
        assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    num, den = samples[0] ** 2, np.arange(1.0, 41.0)
    low, high = st.bootstrap_ratio_ci(num, den, 1500, seed=4)
    res = scipy_stats.bootstrap(
        (num, den),
        lambda n, d, axis=-1: n.sum(axis) / d.sum(axis),
        n_resamples=1500,
        paired=True,
        method="percentile",
        rng=np.random.default_rng(4),
        vectorized=True,
    )
    ci = res.confidence_interval
    assert (low, high) == pytest.approx((ci.low, ci.high), rel=1e-12)


def test_jensen_shannon_in_bits():
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(12), size=6)
    q = rng.dirichlet(np.ones(12) * 0.3, size=6)
    q[0, :5] = 0  # zeros on one side
    q[0] /= q[0].sum()
    ours = st.js_divergence_bits(p, q)
    theirs = [distance.jensenshannon(a, b, base=2) ** 2 for a, b in zip(p, q, strict=True)]
    assert ours == pytest.approx(theirs, rel=1e-10, abs=1e-15)
    dist = st.js_divergence({"a": 2, "b": 1}, {"b": 3, "c": 1})
    assert dist == pytest.approx(distance.jensenshannon([2, 1, 0], [0, 3, 1], base=2) ** 2)

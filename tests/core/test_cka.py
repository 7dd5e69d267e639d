"""Linear CKA: the debiased estimator against its definition, its invariances, its value
for independent features, and the leave-one-group-out values of the jackknife."""

from __future__ import annotations

import math

import numpy as np
import pytest

from domaingpt.core.cka import cka_jackknife, jackknife_ci, linear_cka


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def related(n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    r = rng(seed)
    x = r.normal(size=(n, 8))
    return x, x @ r.normal(size=(8, 5)) + r.normal(size=(n, 5))


def hsic_by_definition(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. (2012), with n × n Gram matrices, written as in the paper."""
    n = len(k)
    k, l = k.copy(), l.copy()  # noqa: E741
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (
        np.trace(k @ l)
        + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ k @ l @ one)
    ) / (n * (n - 3))


def test_the_debiased_estimator_is_its_definition():
    x, y = related()
    k, l = x @ x.T, y @ y.T  # noqa: E741
    expected = hsic_by_definition(k, l) / math.sqrt(
        hsic_by_definition(k, k) * hsic_by_definition(l, l)
    )
    assert linear_cka(x, y) == pytest.approx(expected, rel=1e-10)


def test_the_plain_estimator_is_the_centered_frobenius_ratio():
    x, y = related()
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.norm(xc.T @ yc) ** 2 / (
        np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)
    )
    assert linear_cka(x, y, debiased=False) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("debiased", [True, False])
def test_a_representation_is_identical_to_itself(debiased):
    x, _ = related()
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [True, False])
def test_invariant_to_rotation_isotropic_scaling_and_translation(debiased):
    x, y = related()
    q, _ = np.linalg.qr(rng(3).normal(size=(8, 8)))
    base = linear_cka(x, y, debiased=debiased)
    assert linear_cka(x @ q, y, debiased=debiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(7.5 * x, 0.01 * y, debiased=debiased) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x + 3.0, y - 2.0, debiased=debiased) == pytest.approx(base, rel=1e-10)
    # ... but not to an anisotropic scaling of the features
    assert linear_cka(x * np.arange(1, 9), y, debiased=debiased) != pytest.approx(base, rel=1e-3)


def test_independent_features_score_near_zero_and_the_plain_estimator_does_not():
    r = rng(1)
    n, d = 4000, 128
    x, y = r.normal(size=(n, d)), r.normal(size=(n, d))
    assert abs(linear_cka(x, y)) < 0.01
    # the plain estimator is biased upwards by about d / (n + d)
    assert linear_cka(x, y, debiased=False) == pytest.approx(d / (n + d), rel=0.2)


def test_too_few_inputs_or_mismatched_shapes():
    x, y = related(3)
    assert math.isnan(linear_cka(x, y))
    with pytest.raises(ValueError, match="same n"):
        linear_cka(np.zeros((5, 2)), np.zeros((4, 2)))


def test_leave_one_group_out_values_are_the_estimates_without_that_group():
    x, y = related(50)
    groups = rng(2).permutation(np.r_[np.zeros(7, int), np.repeat(np.arange(1, 9), 5), [9] * 3])
    value, labels, loo = cka_jackknife(x, y, groups)
    assert value == pytest.approx(linear_cka(x, y), rel=1e-12)
    assert list(labels) == list(range(10))
    for label, got in zip(labels, loo, strict=True):
        keep = groups != label
        assert got == pytest.approx(linear_cka(x[keep], y[keep]), rel=1e-9)


def test_jackknife_interval():
    loo = np.array([0.5, 0.52, 0.48, 0.51, 0.49])
    low, high = jackknife_ci(0.5, loo)
    se = math.sqrt(4 / 5 * ((loo - loo.mean()) ** 2).sum())
    t4 = 2.7764451051977987  # scipy.stats.t.ppf(0.975, 4): Student's t, G - 1 = 4 df
    assert (low, high) == pytest.approx((0.5 - t4 * se, 0.5 + t4 * se), rel=1e-9)
    assert all(math.isnan(v) for v in jackknife_ci(0.5, np.array([0.5])))
    # an interval from the jackknife covers a related pair's CKA, not zero
    x, y = related(200)
    value, _, loo = cka_jackknife(x, y, np.repeat(np.arange(40), 5))
    low, high = jackknife_ci(value, loo)
    assert 0 < low < value < high < 1

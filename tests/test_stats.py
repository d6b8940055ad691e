"""The shared statistics helpers: each interval covers what it should, and each can fail."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from attnverify.proofs_checks.stats import (
    bootstrap_ci,
    holm,
    loglog_slope,
    loglog_slope_bootstrap,
    mean_ci,
    paired_test,
    z_test,
)


@given(seed=st.integers(0, 2**16))
def test_bootstrap_ci_is_seeded_and_brackets_the_estimate(seed: int) -> None:
    x = np.random.default_rng(seed).normal(1.0, 1.0, size=60)
    ci = bootstrap_ci(x, seed=seed)
    assert ci == bootstrap_ci(x, seed=seed)
    assert ci.lo <= ci.estimate <= ci.hi
    assert ci.hi - ci.lo < 1.0


def test_bootstrap_and_mean_ci_exclude_a_wrong_mean() -> None:
    x = np.random.default_rng(0).normal(1.0, 0.1, size=200)
    for ci in (bootstrap_ci(x, seed=1), bootstrap_ci(x, seed=1, statistic="median"), mean_ci(x)):
        assert ci.contains(1.0) or abs(ci.estimate - 1.0) < 0.03
        assert not ci.contains(1.1)
        assert not ci.within(1.05, 2.0)


def test_bootstrap_coverage_is_near_nominal() -> None:
    rng = np.random.default_rng(3)
    hits = sum(bootstrap_ci(rng.normal(0.0, 1.0, 40), seed=r, n_resamples=500).contains(0.0) for r in range(200))
    assert 170 <= hits <= 200  # 95 % nominal; percentile intervals run a little narrow at n = 40


def test_loglog_slope_recovers_a_power_law_and_excludes_the_wrong_one() -> None:
    h = np.array([0.02, 0.04, 0.08, 0.16])
    y = 3.0 * h**2 * np.exp(np.random.default_rng(1).normal(0, 0.02, h.size))
    fit = loglog_slope(h, y)
    assert fit.slope.contains(2.0)
    assert not fit.slope.contains(1.0)
    assert fit.slope.within(1.7, 2.3)
    assert abs(fit.intercept - np.log(3.0)) < 0.2
    exact = loglog_slope([1.0, 2.0], [1.0, 8.0])
    assert exact.slope.lo == exact.slope.hi == exact.slope.estimate == pytest.approx(3.0, rel=1e-12)


def test_loglog_slope_bootstrap_covers_the_true_order_and_can_fail() -> None:
    h = np.array([0.02, 0.04, 0.08, 0.16])
    rng = np.random.default_rng(2)
    samples = 0.8 * h + rng.normal(0, 1e-3, size=(200, h.size))  # bias ∝ h, noisy per design
    ci = loglog_slope_bootstrap(h, samples, seed=0)
    assert ci.within(0.85, 1.15)
    assert not ci.contains(2.0)
    assert ci == loglog_slope_bootstrap(h, samples, seed=0)


def test_paired_tests_detect_a_shift_and_not_noise() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(0, 1, 50)
    assert paired_test(a + 0.5, a + rng.normal(0, 0.1, 50)) < 1e-6
    assert paired_test(a + 0.5, a, method="sign", alternative="greater") < 1e-6
    assert paired_test(a, a + 0.5, method="sign", alternative="greater") > 0.5

    assert paired_test(a, a) == 1.0
    assert paired_test(a, a, method="sign") == 1.0


def test_holm_is_step_down() -> None:
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]
    assert holm([0.01, 0.02, 0.03]) == [True, True, True]
    assert holm([0.2, 0.001]) == [False, True]
    assert holm([0.06]) == [False]


def test_z_test() -> None:
    assert z_test(1.96, 1.0) == pytest.approx(0.05, abs=1e-3)
    assert z_test(0.0, 1.0) == pytest.approx(1.0)
    assert z_test(3.0, 1.0, alternative="greater") < 0.01
    assert z_test(3.0, 1.0, alternative="less") > 0.99


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: bootstrap_ci([1.0], seed=0), "x"),
        (lambda: bootstrap_ci([1.0, float("nan")], seed=0), "x"),
        (lambda: bootstrap_ci([1.0, 2.0], seed=0, statistic="max"), "statistic"),
        (lambda: mean_ci([1.0, 2.0], level=1.5), "level"),
        (lambda: loglog_slope([1.0, 2.0], [1.0, -1.0]), "x, y"),
        (lambda: loglog_slope([1.0, 2.0], [1.0, 2.0, 3.0]), "y"),
        (lambda: loglog_slope([1.0, 1.0], [1.0, 2.0]), "x"),
        (lambda: loglog_slope_bootstrap([1.0, 2.0], np.ones((3, 3)), seed=0), "samples"),
        (lambda: paired_test([1.0, 2.0], [1.0, 2.0], method="t"), "method"),
        (lambda: holm([1.5]), "pvalues"),
        (lambda: z_test(1.0, 0.0), "se"),
    ],
)
def test_bad_input_names_the_argument(call, name: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=name):
        call()

"""Shared statistical machinery of the statistical claims: intervals, slopes and paired tests.

Every statistical claim passes or fails on a 95 % confidence interval, never on a point estimate.
The helpers here are deterministic (numpy ``Generator`` seeded by the caller) and return plain
floats so a check can write them into findings.  Conventions:

* an interval is an :class:`Interval` ``(estimate, lo, hi)``;
* ``level`` is the two-sided confidence level (0.95 unless stated);
* inputs are 1-D sequences of finite floats; anything else raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as _st

__all__ = [
    "Interval",
    "SlopeFit",
    "bootstrap_ci",
    "holm",
    "loglog_slope",
    "loglog_slope_bootstrap",
    "mean_ci",
    "paired_test",
    "z_test",
]


class Interval(NamedTuple):
    """A point estimate with a two-sided confidence interval ``[lo, hi]``."""

    estimate: float
    lo: float
    hi: float

    def contains(self, value: float) -> bool:
        """Whether ``value`` lies in ``[lo, hi]``."""
        return self.lo <= value <= self.hi

    def within(self, lo: float, hi: float) -> bool:
        """Whether the whole interval lies inside the band ``[lo, hi]``."""
        return lo <= self.lo and self.hi <= hi

    def overlaps(self, other: Interval) -> bool:
        """Whether the two intervals share a point."""
        return self.lo <= other.hi and other.lo <= self.hi


class SlopeFit(NamedTuple):
    """OLS fit ``log y = a + b log x``: the slope ``b`` with its interval and the intercept ``a``."""

    slope: Interval
    intercept: float


def _vector(x: Sequence[float] | np.ndarray, name: str, min_len: int = 2) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of floats, got shape {a.shape}")
    if a.size < min_len:
        raise ValueError(f"{name}: expected at least {min_len} values, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return a


def _level(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a confidence level in (0, 1), got {level}")
    return level


def mean_ci(x: Sequence[float] | np.ndarray, level: float = 0.95) -> Interval:
    """Mean with the normal-approximation interval ``mean ± z·s/√n`` (z = 1.96 at 95 %)."""
    a = _vector(x, "x")
    z = float(_st.norm.ppf(0.5 + _level(level) / 2))
    m = float(a.mean())
    se = float(a.std(ddof=1) / math.sqrt(a.size))
    return Interval(m, m - z * se, m + z * se)


def bootstrap_ci(
    x: Sequence[float] | np.ndarray,
    *,
    seed: int,
    statistic: str = "mean",
    n_resamples: int = 2000,
    level: float = 0.95,
) -> Interval:
    """Percentile bootstrap interval of ``statistic`` ("mean" or "median") over the samples ``x``.

    ``x`` holds one value per independent replicate (seed, design); resamples are drawn with a
    numpy generator seeded by ``seed``, so the interval is reproducible.
    """
    a = _vector(x, "x")
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic: expected 'mean' or 'median', got {statistic!r}")
    if n_resamples < 100:
        raise ValueError(f"n_resamples: expected at least 100, got {n_resamples}")
    alpha = 1.0 - _level(level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(n_resamples, a.size))
    fn = np.mean if statistic == "mean" else np.median
    boot = fn(a[idx], axis=1)
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return Interval(float(fn(a)), float(lo), float(hi))


def loglog_slope(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    *,
    level: float = 0.95,
) -> SlopeFit:
    """OLS slope of ``log y`` against ``log x`` with its Student-t interval (n − 2 dof).

    With two points the slope is exact and the interval degenerates to it; use
    :func:`loglog_slope_bootstrap` when each ``y`` is itself a mean over replicates.
    """
    lx, ly = _logs(x, y)
    n = lx.size
    xc = lx - lx.mean()
    sxx = float(xc @ xc)
    b = float(xc @ (ly - ly.mean()) / sxx)
    a = float(ly.mean() - b * lx.mean())
    if n == 2:
        return SlopeFit(Interval(b, b, b), a)
    resid = ly - a - b * lx
    se = math.sqrt(float(resid @ resid) / (n - 2) / sxx)
    t = float(_st.t.ppf(0.5 + _level(level) / 2, n - 2))
    return SlopeFit(Interval(b, b - t * se, b + t * se), a)


def _logs(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ax, ay = _vector(x, "x"), _vector(y, "y")
    if ax.shape != ay.shape:
        raise ValueError(f"y: expected as many values as x ({ax.size}), got {ay.size}")
    if np.any(ax <= 0) or np.any(ay <= 0):
        raise ValueError("x, y: a log-log slope needs strictly positive values")
    if np.ptp(ax) == 0:
        raise ValueError("x: expected at least two distinct values")
    return np.log(ax), np.log(ay)


def loglog_slope_bootstrap(
    x: Sequence[float] | np.ndarray,
    samples: np.ndarray,
    *,
    seed: int,
    n_resamples: int = 2000,
    level: float = 0.95,
) -> Interval:
    """Slope of ``log |mean(samples[:, k])|`` against ``log x[k]``, interval by resampling replicates.

    ``samples`` has shape ``(R, len(x))``: row r holds replicate r's value at every ``x`` (the
    same design reused across ``x``), so resampling rows keeps the pairing between columns.
    The estimate is the slope of the full-sample means; the interval is the percentile interval of
    the resampled slopes.
    """
    ax = _vector(x, "x")
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim != 2 or s.shape[1] != ax.size or s.shape[0] < 2:
        raise ValueError(f"samples: expected shape (R >= 2, {ax.size}), got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("samples: expected finite values, got NaN or inf")
    alpha = 1.0 - _level(level)
    lx = np.log(ax)
    xc = lx - lx.mean()
    sxx = float(xc @ xc)

    def slopes(means: np.ndarray) -> np.ndarray:
        ly = np.log(np.abs(means))
        return (ly - ly.mean(axis=-1, keepdims=True)) @ xc / sxx

    est = float(slopes(s.mean(axis=0)))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, s.shape[0], size=(n_resamples, s.shape[0]))
    boot = slopes(s[idx].mean(axis=1))
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return Interval(est, float(lo), float(hi))


def paired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    method: str = "wilcoxon",
    alternative: str = "two-sided",
) -> float:
    """p-value of a paired test of ``a - b`` centred at 0: Wilcoxon signed-rank or the exact sign test.

    ``alternative`` is "two-sided", "greater" (a tends to exceed b) or "less".  Zero differences
    are dropped by the sign test and handled by scipy's default (``zero_method="wilcox"``) otherwise.
    """
    x, y = _vector(a, "a"), _vector(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"b: expected as many values as a ({x.size}), got {y.size}")
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative: expected 'two-sided', 'greater' or 'less', got {alternative!r}")
    d = x - y
    if method == "wilcoxon":
        if not np.any(d != 0):
            return 1.0
        return float(_st.wilcoxon(d, alternative=alternative).pvalue)
    if method == "sign":
        nz = d[d != 0]
        if nz.size == 0:
            return 1.0
        return float(_st.binomtest(int((nz > 0).sum()), int(nz.size), 0.5, alternative=alternative).pvalue)
    raise ValueError(f"method: expected 'wilcoxon' or 'sign', got {method!r}")


def holm(pvalues: Sequence[float] | np.ndarray, alpha: float = 0.05) -> list[bool]:
    """Holm's step-down correction: which of the hypotheses are rejected at family-wise level ``alpha``."""
    p = _vector(pvalues, "pvalues", min_len=1)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("pvalues: expected values in [0, 1]")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: expected a level in (0, 1), got {alpha}")
    m = p.size
    reject = [False] * m
    for rank, i in enumerate(np.argsort(p, kind="stable")):
        if p[i] > alpha / (m - rank):
            break
        reject[int(i)] = True
    return reject


def z_test(estimate: float, se: float, null: float = 0.0, alternative: str = "two-sided") -> float:
    """p-value of ``(estimate - null) / se`` against a standard normal."""
    if not (math.isfinite(estimate) and math.isfinite(null)):
        raise ValueError("estimate, null: expected finite values")
    if not (math.isfinite(se) and se > 0):
        raise ValueError(f"se: expected a finite positive standard error, got {se}")
    z = (estimate - null) / se
    if alternative == "two-sided":
        return float(2 * _st.norm.sf(abs(z)))
    if alternative == "greater":
        return float(_st.norm.sf(z))
    if alternative == "less":
        return float(_st.norm.cdf(z))
    raise ValueError(f"alternative: expected 'two-sided', 'greater' or 'less', got {alternative!r}")

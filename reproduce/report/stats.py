"""Statistics for a handful of seeds: intervals, tests, a multiple-comparison correction and power.

Everything a table or a claim says about uncertainty comes from here, computed with
``scipy.stats`` (docs/claims.md has the formulas and the reasons for each choice):

* :func:`mean_interval`: the mean of n seeds with its Student-t interval (``t_{n-1}`` quantile
  times the standard error). With n = 1 there is no interval: ``low`` / ``high`` are None, never
  a made-up one.
* :func:`welch`: Welch's unequal-variance t-test of two arms and the interval of the difference of
  their means (Welch 1947; ``scipy.stats.ttest_ind(equal_var=False)``). When neither arm varies
  (every seed gave the same top-1, e.g. a stem that always collapses to chance) the t statistic
  is undefined and the exact two-sided permutation test of the difference of means is used.
* :func:`holm`: Holm's (1979) step-down adjustment of a family of p-values (family-wise error
  rate; uniformly more powerful than Bonferroni, no independence assumption).
* :func:`wilson`: the Wilson score interval of a proportion (a divergence rate), which stays
  inside [0, 1] and is not degenerate at 0 of n (``scipy.stats.binomtest(...).proportion_ci``).
* :func:`variance_ratio`: the F test of two variances (across-seed spread), with its exact power.
* :func:`seeds_needed`, :func:`welch_power`, :func:`variance_seeds_needed`: how many seeds per arm
  a test needs to reach a given power at the observed effect and spread (noncentral t for Welch,
  the F distribution for variances).

Nothing here imports torch; scipy is imported inside the functions (``srv --help`` stays fast).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "LEVEL",
    "Interval",
    "Difference",
    "VarianceRatio",
    "mean_interval",
    "welch",
    "permutation_p",
    "holm",
    "wilson",
    "variance_ratio",
    "welch_power",
    "seeds_needed",
    "variance_power",
    "variance_seeds_needed",
    "MAX_SEEDS",
]

LEVEL = 0.95
#: power estimates stop here: "more than 200 seeds" is an answer in itself
MAX_SEEDS = 200


def _clean(values: Sequence[float]) -> list[float]:
    out = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return out


def _sd(values: list[float]) -> float | None:
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


@dataclass(frozen=True)
class Interval:
    """A mean over n seeds with its t-interval (``low`` / ``high`` None when n < 2)."""

    mean: float
    n: int
    sd: float | None
    low: float | None
    high: float | None
    level: float = LEVEL

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval | None:
    """Mean and Student-t interval, ``mean ± t_{n-1, (1+level)/2} · sd / sqrt(n)``.

    None for no values; for n = 1 the mean with no interval (there is no variance estimate).
    """
    from scipy import stats

    x = _clean(values)
    if not x:
        return None
    mean = sum(x) / len(x)
    sd = _sd(x)
    if sd is None:
        return Interval(mean, 1, None, None, None, level)
    half = float(stats.t.ppf((1 + level) / 2, len(x) - 1)) * sd / math.sqrt(len(x))
    return Interval(mean, len(x), sd, mean - half, mean + half, level)


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` with its interval and a two-sided test."""

    diff: float
    low: float
    high: float
    p: float
    t: float | None  # None: the permutation test was used (no variance in either arm)
    df: float | None
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    sd_a: float
    sd_b: float
    level: float = LEVEL
    test: str = "welch"  # welch | permutation

    def describe(self) -> str:
        """``Welch t(3.1) = 4.20`` or ``exact permutation test``."""
        if self.test == "permutation":
            return "exact permutation test (no variance in either arm)"
        return f"Welch t({self.df:.1f}) = {self.t:.2f}"


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact two-sided permutation p-value of the difference of means (every split of the pooled
    values into groups of the original sizes; ``scipy.stats.permutation_test``)."""
    from scipy import stats

    x, y = _clean(a), _clean(b)

    def statistic(u, v, axis):  # noqa: ANN001, ANN202 - scipy's vectorised signature
        return u.mean(axis=axis) - v.mean(axis=axis)

    res = stats.permutation_test((x, y), statistic, permutation_type="independent",
                                 alternative="two-sided", n_resamples=math.inf, vectorized=True)
    return float(res.pvalue)


def welch(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Difference | None:
    """Welch's t-test of ``a`` against ``b`` and the interval of ``mean(a) - mean(b)``.

    The interval is ``diff ± t_{ν, (1+level)/2} · sqrt(s_a²/n_a + s_b²/n_b)`` with the
    Welch-Satterthwaite ν; the same numbers as ``scipy.stats.ttest_ind(a, b, equal_var=False)``
    (computed from the exact sample variances, so an arm whose seeds all agree raises no
    precision warning). None when either arm has fewer than 2 values (no variance: no test).
    """
    from scipy import stats

    x, y = _clean(a), _clean(b)
    if len(x) < 2 or len(y) < 2:
        return None
    ma, mb = sum(x) / len(x), sum(y) / len(y)
    sa, sb = _sd(x) or 0.0, _sd(y) or 0.0
    diff = ma - mb
    if sa == 0.0 and sb == 0.0:  # t undefined: distribution-free exact test, no interval width
        return Difference(diff, diff, diff, permutation_p(x, y), None, None, len(x), len(y),
                          ma, mb, 0.0, 0.0, level, "permutation")
    va, vb = sa**2 / len(x), sb**2 / len(y)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
    t = diff / se
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf((1 + level) / 2, df)) * se
    return Difference(diff, diff - half, diff + half, p, t, df, len(x), len(y), ma, mb, sa, sb,
                      level, "welch")


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None / NaN entries are not tests and stay None).

    Sorted ascending, ``p_(k)`` becomes ``max_{j <= k} min(1, (m - j + 1) p_(j))``; reject where the
    adjusted value is below alpha.
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None and not math.isnan(p)]
    out: list[float | None] = [None] * len(pvalues)
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda j: pvalues[j])):  # type: ignore[arg-type,return-value]
        p = float(pvalues[i])  # type: ignore[arg-type]
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float] | None:
    """Wilson score interval of the proportion k / n (None for n = 0)."""
    from scipy import stats

    if n <= 0:
        return None
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class VarianceRatio:
    """``var(a) / var(b)`` with the two-sided F test and its interval."""

    ratio: float
    low: float
    high: float
    p: float
    n_a: int
    n_b: int
    sd_a: float
    sd_b: float
    level: float = LEVEL


def variance_ratio(a: Sequence[float], b: Sequence[float], level: float = LEVEL,
                   resolution: float = 0.0) -> VarianceRatio | None:
    """The F test of ``var(a) = var(b)`` (two-sided) and the interval of the ratio.

    ``F = s_a² / s_b²`` has an F(n_a - 1, n_b - 1) distribution under the null for normal data
    (sensitive to non-normality: docs/claims.md). ``resolution``: the step of the measurement
    (a top-1 on N images moves in steps of 100/N); a variance below ``resolution² / 12`` (the
    variance of rounding to that grid, Sheppard) cannot be resolved and is raised to it, so seeds
    that happen to agree do not give a ratio of 0. None when an arm has fewer than 2 values or
    neither arm has a positive variance.
    """
    from scipy import stats

    x, y = _clean(a), _clean(b)
    if len(x) < 2 or len(y) < 2:
        return None
    floor = resolution**2 / 12.0
    va, vb = max((_sd(x) or 0.0) ** 2, floor), max((_sd(y) or 0.0) ** 2, floor)
    if va == 0.0 or vb == 0.0:
        return None
    sa, sb = math.sqrt(va), math.sqrt(vb)
    d1, d2 = len(x) - 1, len(y) - 1
    ratio = va / vb
    cdf = float(stats.f.cdf(ratio, d1, d2))
    p = min(1.0, 2 * min(cdf, 1 - cdf))
    q_hi = float(stats.f.ppf((1 + level) / 2, d1, d2))
    q_lo = float(stats.f.ppf((1 - level) / 2, d1, d2))
    return VarianceRatio(ratio, ratio / q_hi, ratio / q_lo, p, len(x), len(y), sa, sb, level)


def welch_power(diff: float, sd_a: float, sd_b: float, n: int, alpha: float) -> float:
    """Power of the two-sided Welch test with n seeds per arm at a true difference ``diff`` and
    true spreads ``sd_a``, ``sd_b``: the noncentral t with ``ncp = diff / sqrt((sd_a² + sd_b²)/n)``
    and the Welch-Satterthwaite degrees of freedom."""
    from scipy import stats

    if n < 2:
        return 0.0
    va, vb = sd_a**2 / n, sd_b**2 / n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return 1.0 if diff != 0 else 0.0
    df = (va + vb) ** 2 / ((va**2 + vb**2) / (n - 1))  # se > 0, so va + vb > 0
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    ncp = abs(diff) / se
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))


def seeds_needed(diff: float, sd_a: float, sd_b: float, alpha: float, power: float = 0.8,
                 max_n: int = MAX_SEEDS) -> int | None:
    """Smallest n seeds per arm for which :func:`welch_power` reaches ``power``; None beyond
    ``max_n`` (e.g. an observed difference of about 0)."""
    if diff == 0:
        return None
    for n in range(2, max_n + 1):
        if welch_power(diff, sd_a, sd_b, n, alpha) >= power:
            return n
    return None


def variance_power(ratio: float, n: int, alpha: float) -> float:
    """Power of the two-sided F test with n seeds per arm when the true variance ratio is
    ``ratio``: under it ``F / ratio`` is F(n-1, n-1)."""
    from scipy import stats

    if n < 2 or ratio <= 0 or math.isinf(ratio):
        return 1.0 if math.isinf(ratio) and n >= 2 else 0.0
    d = n - 1
    hi = float(stats.f.ppf(1 - alpha / 2, d, d))
    lo = float(stats.f.ppf(alpha / 2, d, d))
    return float(stats.f.sf(hi / ratio, d, d) + stats.f.cdf(lo / ratio, d, d))


def variance_seeds_needed(ratio: float, alpha: float, power: float = 0.8,
                          max_n: int = MAX_SEEDS) -> int | None:
    """Smallest n per arm for which :func:`variance_power` reaches ``power``."""
    if ratio == 1.0 or ratio <= 0:
        return None
    for n in range(2, max_n + 1):
        if variance_power(ratio, n, alpha) >= power:
            return n
    return None

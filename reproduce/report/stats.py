"""Statistics for a handful of seeds: intervals, tests, a multiple-comparison correction and power.

Everything a table or a claim says about uncertainty comes from here, computed with
``scipy.stats`` (docs/claims.md has the formulas and the reasons for each choice):

* :func:`mean_interval`: the mean of n seeds with its Student-t interval (``t_{n-1}`` quantile
  times the standard error). With n = 1 there is no interval: ``low`` / ``high`` are None, never
  a made-up one.
* :func:`welch`: Welch's unequal-variance t-test of two arms and the interval of the difference of
  their means (Welch 1947; ``scipy.stats.ttest_ind(equal_var=False)``). Each arm's variance is
  floored at the measurement's resolution (a top-1 on N images moves in steps of h = 100 / N; a
  variance below h² / 12, that of a value rounded to the grid, cannot be resolved), so seeds that
  happen to agree neither give an infinite t nor need a special case.
* :func:`holm`: Holm's (1979) step-down adjustment of a family of p-values (family-wise error
  rate; uniformly more powerful than Bonferroni, no independence assumption).
* :func:`wilson`: the Wilson score interval of a proportion (a divergence rate), which stays
  inside [0, 1] and is not degenerate at 0 of n (``scipy.stats.binomtest(...).proportion_ci``).
* :func:`variance_ratio`: the F test of two variances (across-seed spread), with its exact power.
* :func:`fisher`: Fisher's exact test of two divergence rates (``scipy.stats.fisher_exact``).
* :func:`paired_draws`, :func:`draws_needed`: two arms' errors on the same random
  hyper-parameter draws (Xiao et al.'s stability EDF, docs/paper.md §3), paired by draw:
  Wilcoxon's signed-rank test (``scipy.stats.wilcoxon``) and each arm's fraction of draws under
  the pooled median error; the draws a verdict needs by the normal approximation over Wilcoxon's
  asymptotic relative efficiency (an approximation, not a simulation).
* :func:`seeds_needed`, :func:`welch_power`, :func:`variance_seeds_needed`: how many seeds per arm
  a test needs to reach a given power at a given effect and spread. Welch power is a seeded,
  vectorised simulation of Welch's test itself (the noncentral-t shortcut with the population
  Welch df over-states power at n = 2-4 and returns NaN at large noncentrality); the F test's
  power is exact. Both are post-hoc at the observed effect when called with it (noisy at n = 3).

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
    "fmt_p",
    "mean_interval",
    "welch",
    "holm",
    "wilson",
    "fisher",
    "resolution_floor",
    "variance_ratio",
    "welch_power",
    "seeds_needed",
    "variance_power",
    "variance_seeds_needed",
    "PairedDraws",
    "paired_draws",
    "draws_needed",
    "MAX_SEEDS",
]

LEVEL = 0.95
#: power estimates stop here: "more than 200 seeds" is an answer in itself
MAX_SEEDS = 200
#: simulated Welch tests per power estimate (Monte Carlo sd of a power near 0.8: 0.003)
SIMULATIONS = 20_000


def resolution_floor(resolution: float) -> float:
    """The smallest variance a measurement on a grid of step ``resolution`` can resolve,
    ``h² / 12`` (the variance of a value rounded to the grid): a resolution floor."""
    return resolution**2 / 12.0


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


def fmt_p(p: float | None) -> str:
    """``0.034``, ``<0.001``; ``—`` for no test."""
    if p is None or p != p:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def mean_interval(values: Sequence[float], level: float = LEVEL,
                  bounds: tuple[float, float] | None = None) -> Interval | None:
    """Mean and Student-t interval, ``mean ± t_{n-1, (1+level)/2} · sd / sqrt(n)``, clipped to
    ``bounds`` (a top-1 lies in [0, 100]: an interval past 100 says nothing more).

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
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, len(x), sd, low, high, level)


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` with its interval and a two-sided test."""

    diff: float
    low: float
    high: float
    p: float
    t: float
    df: float
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    sd_a: float
    sd_b: float
    level: float = LEVEL

    def describe(self) -> str:
        """``Welch t(3.1) = 4.20``."""
        return f"Welch t({self.df:.1f}) = {self.t:.2f}"


def welch(a: Sequence[float], b: Sequence[float], level: float = LEVEL,
          resolution: float = 0.0) -> Difference | None:
    """Welch's t-test of ``a`` against ``b`` and the interval of ``mean(a) - mean(b)``.

    The interval is ``diff ± t_{ν, (1+level)/2} · sqrt(s_a²/n_a + s_b²/n_b)`` with the
    Welch-Satterthwaite ν; the same numbers as ``scipy.stats.ttest_ind(a, b, equal_var=False)``
    when both variances are above the resolution floor. ``resolution``: the measurement's step
    (100 / val images for a top-1); each arm's variance is raised to at least
    :func:`resolution_floor`, so three seeds at the same top-1 are an arm whose spread is below
    what 360 images can show, not one of zero spread. None when either arm has fewer than 2
    values, or when neither varies and no resolution is given (t is undefined).
    """
    from scipy import stats

    x, y = _clean(a), _clean(b)
    if len(x) < 2 or len(y) < 2:
        return None
    floor = resolution_floor(resolution)
    ma, mb = sum(x) / len(x), sum(y) / len(y)
    var_a, var_b = max((_sd(x) or 0.0) ** 2, floor), max((_sd(y) or 0.0) ** 2, floor)
    if var_a == 0.0 and var_b == 0.0:
        return None
    diff = ma - mb
    va, vb = var_a / len(x), var_b / len(y)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1))
    t = diff / se
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf((1 + level) / 2, df)) * se
    return Difference(diff, diff - half, diff + half, p, t, df, len(x), len(y), ma, mb,
                      math.sqrt(var_a), math.sqrt(var_b), level)


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


def fisher(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    """Two-sided p of Fisher's exact test that two arms diverge at the same rate (k of n runs
    each; ``scipy.stats.fisher_exact`` on the 2x2 table)."""
    from scipy import stats

    table = [[int(k_a), int(n_a) - int(k_a)], [int(k_b), int(n_b) - int(k_b)]]
    return float(stats.fisher_exact(table, alternative="two-sided").pvalue)


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
    (a top-1 on N images moves in steps of 100/N); a variance below :func:`resolution_floor`
    cannot be resolved and is raised to it, so seeds that happen to agree do not give a ratio of
    0. None when an arm has fewer than 2 values or an arm has no positive variance (only
    possible without a resolution).
    """
    from scipy import stats

    x, y = _clean(a), _clean(b)
    if len(x) < 2 or len(y) < 2:
        return None
    floor = resolution_floor(resolution)
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


def welch_power(diff: float, sd_a: float, sd_b: float, n: int, alpha: float,
                resolution: float = 0.0, simulations: int = SIMULATIONS, seed: int = 0) -> float:
    """Power of the two-sided Welch test, with n seeds per arm, to reject in the direction of a
    true difference ``diff`` at true spreads ``sd_a``, ``sd_b``: the fraction of ``simulations``
    seeded Welch tests of normal arms that do (the statistic of :func:`welch`, variances floored
    at ``resolution`` as there).

    Each simulated arm's mean and variance are drawn from their exact sampling distributions
    (normal; ``sd² χ²_{n-1} / (n-1)``), which is the same as drawing n values and is vectorised
    over the simulations. Unlike the noncentral t with the population Welch df, this is right at
    n = 2-4 and defined at any effect size."""
    import numpy as np
    from scipy import stats

    if n < 2:
        return 0.0
    floor = resolution_floor(resolution)
    if sd_a == 0.0 and sd_b == 0.0 and floor == 0.0:
        return 1.0 if diff != 0 else 0.0
    rng = np.random.default_rng(seed)
    shape = (int(simulations),)
    mean_a = rng.normal(diff, sd_a / math.sqrt(n), shape)
    mean_b = rng.normal(0.0, sd_b / math.sqrt(n), shape)
    var_a = np.maximum(sd_a**2 * rng.chisquare(n - 1, shape) / (n - 1), floor) / n
    var_b = np.maximum(sd_b**2 * rng.chisquare(n - 1, shape) / (n - 1), floor) / n
    se2 = var_a + var_b
    t = (mean_a - mean_b) / np.sqrt(se2)
    df = se2**2 / ((var_a**2 + var_b**2) / (n - 1))
    crit = stats.t.ppf(1 - alpha / 2, df)
    wanted = t > crit if diff >= 0 else t < -crit
    return float(np.mean(wanted))


def seeds_needed(diff: float, sd_a: float, sd_b: float, alpha: float, power: float = 0.8,
                 max_n: int = MAX_SEEDS, resolution: float = 0.0) -> int | None:
    """Smallest n seeds per arm for which :func:`welch_power` reaches ``power``; None beyond
    ``max_n`` (an effect too small to resolve with that many seeds) or for no effect."""
    if diff == 0 or math.isnan(diff):
        return None
    lo, hi = 2, max_n  # power grows with n: bisect (about 8 simulations, not 200)
    if welch_power(diff, sd_a, sd_b, hi, alpha, resolution) < power:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if welch_power(diff, sd_a, sd_b, mid, alpha, resolution) >= power:
            hi = mid
        else:
            lo = mid + 1
    return lo


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


# --- paired by draw (the ``paired-edf`` claims) ---------------------------------------------------

#: Wilcoxon's asymptotic relative efficiency against the paired t-test on normal data (3 / pi)
WILCOXON_ARE = 3 / math.pi


@dataclass(frozen=True)
class PairedDraws:
    """Two arms' errors on the same draws: the mean per-draw difference (a - b) with its 95%
    t interval (descriptive), the signed-rank test, and each arm's EDF at the pooled median."""

    n: int
    diff: float  # mean of a - b over the draws
    sd_diff: float
    low: float
    high: float
    statistic: float  # Wilcoxon's W
    p: float
    median_a: float
    median_b: float
    threshold: float  # the pooled median error
    under_a: float  # fraction of a's draws with error <= threshold
    under_b: float
    mean_a: float
    mean_b: float
    method: str = "exact"  # scipy's: exact, or approx (normal, tie-corrected)

    def describe(self) -> str:
        how = ("exact" if self.method == "exact" else
               "normal approximation with tie correction")
        return (f"Wilcoxon signed-rank over {self.n} paired draws ({how}), "
                f"W = {self.statistic:g}")


def paired_draws(a: Sequence[float], b: Sequence[float], level: float = LEVEL
                 ) -> PairedDraws | None:
    """The paired comparison of ``a`` and ``b`` (same length, element i = draw i): Wilcoxon's
    signed-rank test, two-sided, zeros dropped (``zero_method="wilcox"``); no normality assumed,
    which matters here: a draw either trains or collapses to chance. None with fewer than 2
    draws or when every difference is 0 (the test is undefined)."""
    import numpy as np
    from scipy import stats

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y):
        raise ValueError("paired arms need one value per draw in each")
    d = x - y
    if len(d) < 2 or not np.any(d != 0):
        return None
    # scipy's exact null distribution holds without ties or zero differences (n <= 50 here);
    # otherwise the normal approximation with the tie correction, and the report says which
    exact = len(d) <= 50 and np.all(d != 0) and len(np.unique(np.abs(d))) == len(d)
    method = "exact" if exact else "approx"
    res = stats.wilcoxon(x, y, zero_method="wilcox", alternative="two-sided", method=method)
    sd = float(np.std(d, ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(d) - 1)) * sd / math.sqrt(len(d))
    pooled = float(np.median(np.concatenate([x, y])))
    return PairedDraws(len(d), float(d.mean()), sd, float(d.mean()) - half,
                       float(d.mean()) + half, float(res.statistic), float(res.pvalue),
                       float(np.median(x)), float(np.median(y)), pooled,
                       float(np.mean(x <= pooled)), float(np.mean(y <= pooled)),
                       float(x.mean()), float(y.mean()), method)


def draws_needed(diff: float, sd_diff: float, alpha: float, power: float = 0.8,
                 limit: int = 1000) -> int | None:
    """Draws that would give the signed-rank test ``power`` at the observed mean difference and
    its spread: the normal approximation of the paired test, divided by Wilcoxon's ARE (3 / pi)
    (an approximation, not a simulation), at least 6 (below 6 pairs the exact two-sided test
    cannot reach p < 0.05); None when beyond ``limit`` or the effect is 0."""
    from scipy import stats

    if diff == 0 or sd_diff <= 0:
        return None if diff == 0 else 6
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    n = max(math.ceil((z * sd_diff / abs(diff)) ** 2 / WILCOXON_ARE), 6)
    return n if n <= limit else None

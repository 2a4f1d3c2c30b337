"""reproduce.report.stats against scipy and hand computations; the statistics srv table prints."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from scipy import stats as sp
from test_tables import _golden, _grid, check_latex, tables_env, write_run  # noqa: F401

from reproduce.errors import SrvError
from reproduce.experiments.export import grid_records
from reproduce.report import stats
from reproduce.report.records import frame
from reproduce.report.render import render_latex, render_markdown
from reproduce.report.stats import fmt_p
from reproduce.report.tables import build_table

A = [93.1, 94.2, 92.5, 95.0]
B = [41.1, 44.4, 43.3]


def gather(grid, runs):  # noqa: ANN001, ANN201
    """A grid's runs folder as the report's frame (export, then the report's view)."""
    return frame(grid, grid_records(grid, runs))


def test_mean_interval_is_the_student_t_interval() -> None:
    iv = stats.mean_interval(A)
    mean = sum(A) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in A) / 3)
    half = sp.t.ppf(0.975, 3) * sd / 2  # t_{3, 0.975} = 3.182
    assert iv.mean == pytest.approx(mean) and iv.sd == pytest.approx(sd)
    assert (iv.low, iv.high) == pytest.approx((mean - half, mean + half))
    ref = sp.ttest_1samp(A, 0).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high))
    one = stats.mean_interval([97.5])
    assert one.n == 1 and one.mean == 97.5 and not one.has_interval and one.low is None
    assert stats.mean_interval([]) is None


def test_welch_matches_scipy_and_a_hand_computation() -> None:
    d = stats.welch(A, B)
    ref = sp.ttest_ind(A, B, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert d.t == pytest.approx(ref.statistic) and d.df == pytest.approx(ref.df)
    assert d.p == pytest.approx(ref.pvalue) and (d.low, d.high) == pytest.approx((ci.low, ci.high))
    # by hand: [1, 2, 3.5] vs [4, 5, 7]: t = -3.1667 / sqrt(1.5833/3 + 2.3333/3) = -2.7714
    hand = stats.welch([1, 2, 3.5], [4, 5, 7])
    assert hand.diff == pytest.approx(-19 / 6) and hand.t == pytest.approx(-2.7714348)
    assert hand.df == pytest.approx(3.8585153) and hand.p == pytest.approx(0.0523231, abs=1e-6)
    assert stats.welch([98.0], B) is None  # n = 1: no variance, no test


def test_zero_variance_is_floored_at_the_resolution_with_no_special_case() -> None:
    """Defect C: three seeds at 329/360 (sd 1.7e-14 from float rounding) and three at 336/360
    (sd exactly 0) are the same situation and must give the same kind of test, with a CI of
    positive width; before, the first gave Welch p ~ 1e-32 and the second a permutation p of
    0.1 with a zero-width interval."""
    h = 100 / 360
    other = [41.1, 44.4, 43.3]
    near = stats.welch([329 / 360 * 100] * 3, other, resolution=h)
    exact = stats.welch([336 / 360 * 100] * 3, other, resolution=h)
    floor = h**2 / 12
    for d in (near, exact):
        assert d.sd_a == pytest.approx(math.sqrt(floor))
        assert d.high - d.low > 1.0
        # Welch's numbers with the floored variance, computed by hand
        va, vb = floor / 3, sp.tvar(other) / 3
        df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
        assert d.df == pytest.approx(df)
        assert d.p == pytest.approx(2 * sp.t.sf(abs(d.diff) / math.sqrt(va + vb), df))
    # both arms without variance: still Welch on the floored variances
    both = stats.welch([98.06] * 3, [10.0] * 3, resolution=h)
    assert both.df == pytest.approx(4.0) and both.p < 1e-6 and both.high > both.low
    # no resolution, no variance: t is undefined, no test
    assert stats.welch([98.06] * 3, [10.0] * 3) is None
    # one arm without variance is still Welch (df from the other arm)
    assert stats.welch([98.06, 98.06], [61.9, 65.6]).df == pytest.approx(1.0)


def test_fisher_exact_divergence_rates() -> None:
    assert stats.fisher(3, 4, 0, 4) == pytest.approx(sp.fisher_exact([[3, 1], [0, 4]]).pvalue)
    assert stats.fisher(0, 4, 0, 4) == pytest.approx(1.0)


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04 -> 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04)
    assert stats.holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_wilson_interval_by_formula() -> None:
    z = sp.norm.ppf(0.975)
    for k, n in ((0, 4), (1, 2), (3, 10)):
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        assert stats.wilson(k, n) == pytest.approx((centre - half, centre + half))
    assert stats.wilson(0, 0) is None


def test_variance_ratio_f_test_and_resolution_floor() -> None:
    v = stats.variance_ratio(A, B)
    va, vb = sp.tmean([(x - sum(A) / 4) ** 2 for x in A]) * 4 / 3, \
        sp.tmean([(x - sum(B) / 3) ** 2 for x in B]) * 3 / 2
    assert v.ratio == pytest.approx(va / vb)
    cdf = sp.f.cdf(va / vb, 3, 2)
    assert v.p == pytest.approx(2 * min(cdf, 1 - cdf))
    assert v.low < v.ratio < v.high
    # seeds that agree to the last image: variance floored at (100/360)^2 / 12, not 0
    tied = stats.variance_ratio([98.06, 98.06], [61.9, 65.6], resolution=100 / 360)
    assert tied.sd_a == pytest.approx(100 / 360 / math.sqrt(12)) and 0 < tied.p < 0.05
    assert stats.variance_ratio([98.06, 98.06], [10.0, 10.0]) is None


def _simulated_welch_power(diff: float, sd_a: float, sd_b: float, n: int, alpha: float,
                          runs: int = 40_000) -> float:
    """An independent check: draw n values per arm and run scipy's own Welch test."""
    import numpy as np

    rng = np.random.default_rng(12345)
    a = rng.normal(diff, sd_a, (runs, n))
    b = rng.normal(0.0, sd_b, (runs, n))
    res = sp.ttest_ind(a, b, axis=1, equal_var=False)
    return float(np.mean((res.pvalue < alpha) & (np.sign(res.statistic) == np.sign(diff))))


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_welch_power_matches_a_simulation_of_welchs_test(n: int) -> None:
    """Defect B: the noncentral-t shortcut gave 0.977 at n = 3 for relu-like inputs where
    Welch's test has about 0.87; the power must be that of Welch's test, within 0.02."""
    for diff, sd_a, sd_b, alpha in ((7.7, 1.7, 2.6, 0.05 / 4), (2.0, 1.5, 3.0, 0.05)):
        assert stats.welch_power(diff, sd_a, sd_b, n, alpha) == pytest.approx(
            _simulated_welch_power(diff, sd_a, sd_b, n, alpha), abs=0.02)


def test_power_is_defined_for_huge_effects() -> None:
    """Defect A: scipy's nct.cdf is NaN at df 1, ncp ~48, which made seeds_needed skip n."""
    for n in range(2, 9):
        power = stats.welch_power(88.1, 0.0, 2.6, n, 0.05 / 4)
        assert not math.isnan(power)
    assert stats.welch_power(88.1, 0.0, 2.6, 4, 0.05 / 4) == 1.0
    need = stats.seeds_needed(88.1, 0.0, 2.6, 0.05 / 4)
    assert need is not None and need <= 4
    assert stats.welch_power(88.1, 0.0, 2.6, need - 1, 0.05 / 4) < 0.8


def test_power_and_seeds_needed() -> None:
    # the textbook case: effect size d = 1 needs 17 per group (two-sided alpha 0.05, power 0.8)
    assert stats.seeds_needed(1.0, 1.0, 1.0, 0.05, 0.8) in (17, 18)
    assert stats.welch_power(1.0, 1.0, 1.0, 17, 0.05) == pytest.approx(0.807, abs=0.01)
    powers = [stats.welch_power(2.0, 1.5, 3.0, n, 0.01) for n in range(2, 12, 3)]
    assert powers == sorted(powers)
    assert stats.seeds_needed(0.0, 1.0, 1.0, 0.05) is None
    assert stats.seeds_needed(0.01, 5.0, 5.0, 0.05) is None  # beyond MAX_SEEDS
    # F test: at ratio 1 the power is alpha; a bigger ratio needs fewer seeds
    assert stats.variance_power(1.0, 5, 0.05) == pytest.approx(0.05)
    assert stats.variance_seeds_needed(0.05, 0.05) < stats.variance_seeds_needed(0.2, 0.05)
    # and at df (2, 2) the F test has almost no power (docs/claims.md: descriptive there)
    assert stats.variance_power(0.25, 3, 0.05) == pytest.approx(0.10, abs=0.02)


# --- srv table statistics ------------------------------------------------------------------------

STATS_GRID = """
title = "Stem (stats test)"
[table]
rows = ["stem"]
[axes.stem]
key = "model"
format = "vit-mini-{value}"
values = ["patch", "conv", "conv-norelu", "conv-nobn"]
[presets.mini]
recipe = "mini"
seeds = [0, 1, 2, 3]
set = { epochs = 15, img_size = 16 }
"""


def _stats_runs(runs: Path) -> None:
    common = {"epochs": 15, "img_size": 16}
    for seed, (conv, patch, norelu) in enumerate(zip(A, [*B, None], [47.0, 44.0, 49.5, 45.2],
                                                     strict=True)):
        write_run(runs, "vit-mini-conv", common, "done", conv, seed=seed)
        if patch is None:
            write_run(runs, "vit-mini-patch", common, "diverged", epoch=4, seed=seed)
        else:
            write_run(runs, "vit-mini-patch", common, "done", patch, seed=seed)
        write_run(runs, "vit-mini-conv-norelu", common, "done", norelu, seed=seed)
    write_run(runs, "vit-mini-conv-nobn", common, "done", 30.0, seed=0)


@pytest.mark.usefixtures("tables_env")
def test_table_intervals_tests_and_divergence(tmp_path: Path) -> None:
    grid = _grid(tmp_path, STATS_GRID, "statstest")
    _stats_runs(tmp_path / "runs")
    table = build_table(grid, gather(grid, tmp_path / "runs"), flops=False)
    col = {h: i for i, h in enumerate(table.header)}
    assert list(col)[:8] == ["stem", "top-1 (%)", "n", "95% CI", "Δ vs patch [95% CI]", "p",
                             "Holm p", "diverged"]
    rows = {r[0].text: r for r in table.rows}
    iv = stats.mean_interval(A)
    assert rows["conv"][col["95% CI"]].text == f"[{iv.low:.1f}, {iv.high:.1f}]"
    patch = [*B, 10.0]  # the diverged seed at chance-level top-1 (10 classes), as in srv claims
    ref = sp.ttest_ind(A, patch, equal_var=False)
    ci = ref.confidence_interval()
    assert rows["conv"][col["Δ vs patch [95% CI]"]].text == \
        f"{sum(A) / 4 - sum(patch) / 4:+.1f} [{ci.low:.1f}, {ci.high:.1f}]"
    assert ref.pvalue < 0.05 and rows["conv"][col["p"]].text == fmt_p(ref.pvalue)
    p_norelu = sp.ttest_ind([47.0, 44.0, 49.5, 45.2], patch, equal_var=False).pvalue
    want = stats.holm([ref.pvalue, p_norelu])  # two comparisons: conv-nobn has n = 1
    assert rows["conv"][col["Holm p"]].text == fmt_p(want[0]) and 0.001 < p_norelu
    assert rows["conv-norelu"][col["p"]].text == fmt_p(p_norelu)
    assert rows["conv-norelu"][col["Holm p"]].text == fmt_p(want[1])
    lo, hi = stats.wilson(1, 4)
    assert rows["patch"][col["diverged"]].text == f"1/4 [{100 * lo:.0f}, {100 * hi:.0f}]%"
    assert rows["patch"][col["Δ vs patch [95% CI]"]].text == "reference"
    # n = 1: the value, and no interval or test, never a made-up one
    assert rows["conv-nobn"][col["top-1 (%)"]].markdown().startswith("30.0")
    assert rows["conv-nobn"][col["95% CI"]].text == "n=1: none"
    assert rows["conv-nobn"][col["p"]].text == "—"
    md, tex = render_markdown(table), render_latex(table)
    assert "Holm-adjusted over the 2 comparisons" in md and "Wilson 95%" in md
    assert r"$\Delta$ vs patch" in tex
    _golden("table_stats.md", md)
    _golden("table_stats.tex", tex)
    check_latex(tex, columns=8)
    # another baseline, or none
    other = build_table(grid, gather(grid, tmp_path / "runs"), flops=False, baseline="conv")
    assert "Δ vs conv [95% CI]" in other.header
    plain = build_table(grid, gather(grid, tmp_path / "runs"), flops=False, baseline=None)
    assert "p" not in plain.header and "95% CI" in plain.header
    with pytest.raises(SrvError, match="not a row of table"):
        build_table(grid, gather(grid, tmp_path / "runs"), flops=False, baseline="nope")


@pytest.mark.usefixtures("tables_env")
def test_two_dimensional_table_gets_a_statistics_table(tmp_path: Path) -> None:
    from test_tables import WARMUP_GRID

    grid = _grid(tmp_path, WARMUP_GRID.replace("seeds = [0]", "seeds = [0, 1]"), "warmuptest")
    runs = tmp_path / "runs"
    values = {("vit-mini-patch", 0.0): [60.0, 64.0], ("vit-mini-patch", 5.0): [69.7, 66.1],
              ("vit-mini-conv", 0.0): [95.1, 96.0], ("vit-mini-conv", 5.0): [98.6, 98.3]}
    for (model, warmup), accs in values.items():
        for seed, acc in enumerate(accs):
            write_run(runs, model, {"epochs": 15, "img_size": 16, "warmup_epochs": warmup},
                      "done", acc, seed=seed)
    table = build_table(grid, gather(grid, runs), flops=False)
    (extra,) = table.extra
    assert extra.title == "Statistics" and len(extra.rows) == 4
    conv5 = [r for r in extra.rows if r[0].text == "conv" and r[1].text == "5"][0]
    ref = sp.ttest_ind([98.6, 98.3], [69.7, 66.1], equal_var=False)
    p0 = sp.ttest_ind([95.1, 96.0], [60.0, 64.0], equal_var=False).pvalue
    assert conv5[6].text == fmt_p(ref.pvalue) and ref.pvalue > 0.001
    assert conv5[7].text == fmt_p(stats.holm([p0, ref.pvalue])[1])
    md, tex = render_markdown(table), render_latex(table)
    assert "### Statistics" in md and md.index("### Statistics") > md.index("Provenance")
    assert tex.count(r"\begin{table}") == 2
    _golden("table_warmup_stats.md", md)
    _golden("table_warmup_stats.tex", tex)


@pytest.mark.usefixtures("tables_env")
def test_srv_table_baseline_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from reproduce.cli import app

    (tmp_path / "statstest.toml").write_text(STATS_GRID)
    _stats_runs(tmp_path / "runs")
    args = ["table", str(tmp_path / "statstest.toml"), "--runs-dir", str(tmp_path / "runs"),
            "--no-flops", "--no-write"]
    result = CliRunner().invoke(app, [*args, "--baseline", "conv-norelu"])
    assert result.exit_code == 0, result.output
    assert "Δ vs conv-norelu [95% CI]" in result.output
    result = CliRunner().invoke(app, [*args, "--baseline", "none"])
    assert result.exit_code == 0 and "Δ vs" not in result.output and "95% CI" in result.output
    result = CliRunner().invoke(app, [*args, "--baseline", "xiao"])
    assert result.exit_code == 2 and "--baseline 'xiao' is not a row" in result.stderr


@pytest.mark.usefixtures("tables_env")
def test_fp16_skipped_steps_are_noted(tmp_path: Path) -> None:
    """The engine's result-level skipped_steps (fp16 GradScaler overflows), when present."""
    import json

    grid = _grid(tmp_path, STATS_GRID, "statstest")
    _stats_runs(tmp_path / "runs")
    table = build_table(grid, gather(grid, tmp_path / "runs"), flops=False)
    assert not any("skipped" in n for n in table.notes)
    run = next((tmp_path / "runs").glob("vit-mini-conv-*/result.json"))
    json_result = json.loads(run.read_text())
    run.write_text(json.dumps({**json_result, "skipped_steps": 3}))
    table = build_table(grid, gather(grid, tmp_path / "runs"), flops=False)
    assert any("1 finished run(s) skipped 3 step(s)" in n for n in table.notes)

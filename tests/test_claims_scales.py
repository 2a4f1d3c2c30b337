"""The claims as a person reads them and at two scales: the terminal table of plain sentences
(issue 29 (5)), the stability statistics fixed for the regime scale (logit link, a setting that
did not train, not testable, cost stated), and the two scales side by side (issue 28 (3), (4))."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from conftest import REPO, evaluate_runs
from test_claims import QUICK, write_grid_runs
from test_tables import tables_env, write_run  # noqa: F401 - a fixture
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.recipes.grids import load_grid
from reproduce.report import claims as cl
from reproduce.report.claims.evidence import logit_top1
from reproduce.report.claims.plain import chance_text

runner = CliRunner()
QUICK_FILE = REPO / "recipes" / "claims" / "wang2022.toml"
REGIME_FILE = REPO / "recipes" / "claims" / "wang2022-regime.toml"


def _by_id(report: cl.Report) -> dict[str, cl.Result]:
    return {r.claim.id: r for r in report.results}


def _grid_runs(runs: Path, grid: str, preset: str, top1: dict[tuple[str, str], list[float]],
               axis: str) -> None:
    """Finished runs of ``grid`` at ``preset``: top1[(stem, axis label)][i] is seed i's."""
    n = max(len(v) for v in top1.values())
    for cell in load_grid(grid, preset=preset, seeds=list(range(n))).cells():
        values = top1[(cell.label_dict["stem"], cell.label_dict[axis])]
        write_run(runs, cell.model, cell.override_dict, "done", values[cell.seed],
                  seed=cell.seed)


def _regime_stem_runs(runs: Path) -> None:
    """Finished runs of the stem grid's regime preset (seeds 400-403): every stem trains."""
    regime = {"patch": [80.1, 80.9, 79.8, 80.4], "conv": [84.0, 84.6, 83.9, 84.3],
              "conv-norelu": [83.0, 83.5, 82.8, 83.1], "conv-nobn": [81.0, 82.0, 80.5, 81.2]}
    for cell in load_grid("stem", preset="regime").cells():
        write_run(runs, cell.model, cell.override_dict, "done",
                  regime[cell.label_dict["stem"]][cell.seed - 400], seed=cell.seed,
                  recipe=cell.recipe)


def test_on_a_terminal_each_claim_is_one_plain_sentence(tmp_path: Path) -> None:
    write_grid_runs(tmp_path / "runs", "stem", "quick", QUICK)
    args = ["claims", "--runs-dir", str(tmp_path / "runs"), "--claims", str(QUICK_FILE),
            "--no-diversity", "--no-write", "--format", "table"]
    result = runner.invoke(app, args, env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    out = re.sub(r"[│┃\s]+", " ", result.output)
    # the accuracy claim: the difference in points and how often chance gives it
    diff = sum(QUICK["conv"]) / 3 - sum(QUICK["patch"]) / 3
    assert (f"Conv, BN + ReLU (scaled ReLU) is {diff:.1f} points better than patchify" in out)
    assert "arises by chance less than 1 time in 1,000" in out
    assert "Decision rule" not in out and "| id" not in result.output  # no Markdown, no rule
    assert max(len(line) for line in result.output.splitlines()) <= 100
    explained = runner.invoke(app, [*args, "--explain"], env={"COLUMNS": "100"})
    assert explained.exit_code == 0 and "Decision rule" in explained.output


def test_the_help_names_every_verdict() -> None:
    result = runner.invoke(app, ["claims", "--help"], env={"COLUMNS": "100"})
    text = re.sub(r"[│\s]+", " ", result.output)
    for verdict in cl.Verdict:
        assert str(verdict) in text, verdict


def test_chance_in_words() -> None:
    assert chance_text(0.0004) == "a difference this large arises by chance less than 1 time " \
                                  "in 1,000"
    assert chance_text(0.05) == "a difference this large arises by chance about 1 time in 20"
    assert chance_text(0.7).endswith("often arises by chance")


def test_cost_is_stated_never_counted_as_a_test(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    report = evaluate_runs(tmp_path / "runs", cl.load_claims(QUICK_FILE), ids=["cost"],
                           diversity=False)
    cost = _by_id(report)["cost"]
    assert cost.verdict is cl.Verdict.NOT_TESTED and cost.test is None
    # no test yet; the design's 10 family members wait at p = 1
    assert report.tested == 0 and report.family == 10 and "not run yet" in report.text()
    assert "+28.2% GFLOPs" in cost.statistic and "1 not tested" in report.text()


def test_a_spread_on_the_logit_scale(tmp_path: Path) -> None:
    """stable-lr measures each seed's drop from its best lr on logit(top-1): 90 -> 80 is a
    bigger drop than 50 -> 40 although both are 10 points."""
    lrs = load_grid("lr", preset="quick").axis("lr").labels
    conv = [90.0, 80.0, 85.0, 88.0]
    patch = [50.0, 40.0, 45.0, 48.0]
    top1 = {(stem, lr): [v[i] + s * 0.5 for s in range(3)]
            for stem, v in (("conv", conv), ("patch", patch)) for i, lr in enumerate(lrs)}
    _grid_runs(tmp_path / "runs", "lr", "quick", top1, "lr")
    res = _by_id(evaluate_runs(tmp_path / "runs", cl.load_claims(QUICK_FILE),
                               diversity=False))["stable-lr"]
    assert res.evidence is not None and res.test is not None
    want_conv = logit_top1(90.0, 360) - logit_top1(80.0, 360)
    assert all(math.isclose(v, want_conv, rel_tol=0.1) for v in res.evidence.values_a)
    assert res.test.diff > 0  # the conv-stem drops more on the logit scale
    assert "spread of logit top-1 over lr" in res.statistic
    assert logit_top1(100.0, 360) < math.inf and logit_top1(0.0, 360) > -math.inf


def test_a_setting_that_did_not_train_makes_the_claim_not_testable(tmp_path: Path) -> None:
    """SGD at an untuned lr trains neither stem: stable-optimizer is not testable (issue 28),
    and out of the Holm family, where it used to be contradicted."""
    top1 = {("conv", "adamw"): [90.0, 91.0, 89.0], ("conv", "sgd"): [30.0, 33.0, 31.0],
            ("conv", "sam"): [90.5, 90.0, 91.0], ("patch", "adamw"): [42.0, 44.0, 41.0],
            ("patch", "sgd"): [25.0, 26.0, 24.0], ("patch", "sam"): [41.0, 43.0, 42.0]}
    _grid_runs(tmp_path / "runs", "optimizer", "quick", top1, "opt")
    report = evaluate_runs(tmp_path / "runs", cl.load_claims(QUICK_FILE), diversity=False)
    res = _by_id(report)["stable-optimizer"]
    assert res.verdict is cl.Verdict.NOT_TESTABLE and res.test is None
    assert "conv (scaled ReLU) at sgd: 31.3 top-1 keeps 27%" in res.reason
    # out of the family: the 3 tested are the stem grid's claims on the shared AdamW cells
    assert res.p_holm is None and report.tested == 3 and "stable-optimizer" not in report.pending
    longer = _by_id(report)["longer"]
    assert longer.verdict is cl.Verdict.NOT_TESTABLE and "simply short" in longer.reason


def test_two_scales_side_by_side_each_from_its_own_presets(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    write_grid_runs(runs, "stem", "quick", QUICK, seeds=[100, 101, 102])
    _regime_stem_runs(runs)
    result = runner.invoke(app, ["claims", "--runs-dir", str(runs), "--no-diversity",
                                 "--no-write", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "the paper’s regime" in out and "### quick" in out and "### regime" in out
    quick_part, regime_part = out.split("### quick")[1].split("### regime")
    assert "stem / quick:" in quick_part and "stem / regime" not in quick_part
    assert "stem / regime:" in regime_part and "stem / quick" not in regime_part
    assert "4.0 points" not in regime_part  # Markdown carries numbers, not sentences
    overview = out.split("### quick")[0]
    assert re.search(r"\| accuracy +\| \*\*supported\*\*.*\| \*\*supported\*\*", overview)


def test_a_partial_run_keeps_the_pre_registered_family(tmp_path: Path) -> None:
    """The stem grid alone at the regime scale: the claims whose grids have not run wait in
    the Holm family at p = 1 (the design's 10), so the rest of the run can confirm the verdicts
    but never reverse one (a partial run once overwrote the shipped verdicts)."""
    runs = tmp_path / "runs"
    _regime_stem_runs(runs)
    cs = cl.load_claims(REGIME_FILE)
    report = evaluate_runs(runs, cs, diversity=False)
    assert set(report.pending) == {"convs-alone", "stable-lr", "stable-warmup",
                                   "stable-optimizer", "stable-edf"}
    assert report.family == len(cs.design.family) == 10  # diversity: skipped, at p = 1 too
    tested = [r for r in report.results if r.test is not None]
    assert report.tested == len(tested) + 1 == 5
    from reproduce.report import stats

    ps = [r.p for r in tested]
    want = stats.holm(ps + [1.0] * 6)  # the 5 pending and the skipped diversity
    assert [r.p_holm for r in tested] == pytest.approx(want[: len(tested)])
    # any p the rest of the run brings can only lower these: Holm is monotone
    for later in (1e-9, 0.01, 0.5):
        lower = stats.holm(ps + [later] * 5 + [1.0])[: len(tested)]
        assert all(a <= b + 1e-12 for a, b in zip(lower, want, strict=False))
    # the way to run one names its scale: srv claims --run alone trains the quick scale's
    lr = next(r for r in report.results if r.claim.id == "stable-lr")
    assert lr.reason.endswith("srv ablate lr --preset regime (or srv claims --run --scale regime)")
    text = report.text()
    assert "5 pre-registered ones not run yet (convs-alone, stable-lr, stable-warmup, " \
           "stable-optimizer, stable-edf; each at p = 1" in text
    from reproduce.report.claims.scales import render_scales

    quick = evaluate_runs(runs, cl.load_claims(QUICK_FILE), diversity=False)
    overview = render_scales([quick, report]).split("### ")[0]
    row = next(line for line in overview.splitlines() if line.startswith("| stable-lr "))
    assert row.count("no evidence yet (runs pending; in the Holm family at p = 1)") == 2
    row = next(line for line in overview.splitlines() if line.startswith("| accuracy "))
    assert "**supported**" in row.split("|")[3]


def test_the_regime_scale_plans_its_own_presets(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from test_fashion import write_idx

    from reproduce.data import fashion

    # the plan checks the data: a tiny IDX folder stands in for Debian's package
    monkeypatch.setattr(fashion, "DEBIAN_DIR", str(write_idx(tmp_path / "fmnist")))
    result = runner.invoke(app, ["claims", "--run", "--scale", "regime", "--dry-run",
                                 "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    plan = result.output.split("the full run, grid by grid")[1]
    assert "stem / regime for accuracy, bn, relu, stable-seeds, diversity" in plan
    assert "stem / regime-linear for convs-alone" in plan and "lr-wd-edf / regime" in plan
    assert "quick" not in plan and "epochs /" not in plan  # longer: not testable here


def test_a_calibration_run_is_never_a_confirmatory_presets_evidence(tmp_path: Path) -> None:
    """The calibration's chosen cell is the regime preset's cell at another seed: export and
    claims keep it out of stem / regime (and of every grid sharing the configuration)."""
    from reproduce.experiments.export import collect

    runs = tmp_path / "runs"
    for cell in load_grid("stem", preset="regime-cal-2").cells():
        write_run(runs, cell.model, cell.override_dict, "done",
                  {"patch": 82.5, "conv": 86.6}[cell.label_dict["stem"]], seed=cell.seed,
                  recipe=cell.recipe)
    by_preset: dict[tuple[str, str], int] = {}
    for rec in collect(runs):
        by_preset[(rec.grid, rec.preset)] = by_preset.get((rec.grid, rec.preset), 0) + 1
    assert by_preset == {("stem", "regime-cal-2"): 6}
    report = evaluate_runs(runs, cl.load_claims(REGIME_FILE), diversity=False)
    assert _by_id(report)["accuracy"].verdict is cl.Verdict.NO_EVIDENCE

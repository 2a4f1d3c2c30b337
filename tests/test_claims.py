"""srv claims on hand-written run directories: known data give known numbers, verdicts follow the
evidence, n = 1 never gives a verdict; one real (tiny) diversity measurement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import evaluate_runs
from scipy import stats as sp
from test_tables import tables_env, write_run  # noqa: F401 - a fixture
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.errors import SrvError
from reproduce.recipes.grids import load_grid
from reproduce.report import claims as cl
from reproduce.report import stats

runner = CliRunner()

#: the quick preset's stems, 3 seeds each (top-1 %)
QUICK = {"patch": [41.1, 44.4, 43.3], "conv": [93.1, 94.2, 92.5],
         "conv-norelu": [85.0, 83.3, 83.9], "conv-nobn": [37.8, 35.0, 26.4]}

#: the 2-seed stem grid of the first landing (tables/stem.md; top-1 %, seeds 0 and 1)
STEM_2SEEDS = {"patch": [61.9, 65.6], "patch-bnrelu": [82.2, 88.6], "conv": [98.06, 98.06],
               "conv-norelu": [93.9, 96.1], "conv-nobn": [69.2, 87.5],
               "conv-linear": [58.9, 92.2], "conv-ln": [63.1, 31.4], "xiao": [93.3, 95.3]}


def write_grid_runs(runs: Path, grid: str, preset: str, top1: dict[str, list[float]],
                    seeds: list[int] | None = None) -> None:
    """Finished runs of a real grid's cells (same config hash as srv ablate would use); the
    i-th value of a stem is seed ``seeds[i]`` (default: seed i)."""
    seeds = seeds or list(range(max(len(v) for v in top1.values())))
    for cell in load_grid(grid, preset=preset, seeds=seeds).cells():
        values = top1.get(cell.label_dict["stem"], [])
        i = seeds.index(cell.seed)
        if i < len(values):
            write_run(runs, cell.model, cell.override_dict, "done", values[i], seed=cell.seed)


def _by_id(report: cl.Report) -> dict[str, cl.Result]:
    return {r.claim.id: r for r in report.results}


def test_known_data_give_known_p_values_and_verdicts(tmp_path: Path) -> None:
    write_grid_runs(tmp_path / "runs", "stem", "quick", QUICK)
    report = evaluate_runs(tmp_path / "runs", ids=["accuracy", "bn", "relu", "stable-seeds"])
    res = _by_id(report)
    p = {k: sp.ttest_ind(QUICK["conv"], QUICK[b], equal_var=False).pvalue
         for k, b in (("accuracy", "patch"), ("bn", "conv-nobn"), ("relu", "conv-norelu"))}
    for key in p:
        assert res[key].p == pytest.approx(p[key])
        assert res[key].evidence.n == (3, 3) and res[key].evidence.preset == "quick"
    va, vb = (sp.tvar(QUICK["conv"]), sp.tvar(QUICK["patch"]))
    f_cdf = sp.f.cdf(va / vb, 2, 2)
    assert res["stable-seeds"].p == pytest.approx(2 * min(f_cdf, 1 - f_cdf))
    # the family is the design's: the claims without a test yet (no grid run, no checkpoint)
    # wait at p = 1, so a partial run's verdicts can only be confirmed by the rest
    tested = [r for r in report.results if r.test is not None]
    assert {r.claim.id for r in tested} == {"accuracy", "bn", "relu", "stable-seeds"}
    assert set(report.pending) == {"convs-alone", "stable-lr", "stable-warmup",
                                   "stable-optimizer", "stable-edf", "diversity"}
    assert report.family == 10 and report.tested == 4
    holm = stats.holm([r.p for r in tested] + [1.0] * 6)
    assert [r.p_holm for r in tested] == pytest.approx(holm[: len(tested)])
    assert [res[k].verdict for k in ("accuracy", "bn", "relu")] == ["supported"] * 3
    # the spread claim is not decided by 3 seeds: an estimate of the seeds it needs instead
    seeds = res["stable-seeds"]
    assert seeds.verdict == "inconclusive" and seeds.seeds_needed > 3
    assert seeds.seeds_needed == stats.variance_seeds_needed(va / vb, 0.05 / 10, 0.8)
    assert f"about {seeds.seeds_needed} seeds per arm" in seeds.reason
    text = report.text()
    assert "stem / quick: conv, BN + ReLU (scaled ReLU) vs patchify; seeds 0-2 (n = 3 + 3)" in text
    assert "**supported**" in text and "Holm p" in text


def test_claims_report_golden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_tables import _golden

    monkeypatch.chdir(tmp_path)
    write_grid_runs(Path("runs"), "stem", "quick", QUICK)
    text = evaluate_runs("runs", diversity=False).text()
    _golden("claims_quick.md", text)


def test_verdicts_flip_when_the_evidence_does(tmp_path: Path) -> None:
    # BN only now beats BN + ReLU, clearly enough for the design's family of 10
    flipped = {**QUICK, "conv": [93.0, 93.4, 93.2], "conv-norelu": [97.1, 97.6, 97.3]}
    write_grid_runs(tmp_path / "a", "stem", "quick", flipped)
    res = _by_id(evaluate_runs(tmp_path / "a", ids=["relu", "accuracy"]))
    assert res["relu"].verdict == "contradicted" and res["relu"].test.diff < 0
    assert res["accuracy"].verdict == "supported"
    noisy = {**QUICK, "conv-norelu": [80.0, 95.0, 90.0]}  # overlapping: undecided
    write_grid_runs(tmp_path / "b", "stem", "quick", noisy)
    report = evaluate_runs(tmp_path / "b", ids=["relu", "accuracy"])
    relu = _by_id(report)["relu"]
    assert relu.verdict == "inconclusive" and relu.p_holm >= 0.05
    t = relu.test
    # the family is the design's (10), not the 2 shown (defect D)
    assert report.family == 10 and [r.claim.id for r in report.shown] == ["accuracy", "relu"]
    assert relu.seeds_needed == stats.seeds_needed(t.diff, t.sd_a, t.sd_b, 0.05 / 10, 0.8,
                                                   resolution=100 / 360)


def test_holm_family_does_not_depend_on_filters(tmp_path: Path) -> None:
    """Defect D: srv claims accuracy tested one claim at unadjusted alpha."""
    write_grid_runs(tmp_path / "runs", "stem", "quick", QUICK)
    full = _by_id(evaluate_runs(tmp_path / "runs", diversity=False))
    for ids, grids in ((["relu"], None), (None, ["stem"])):
        part = evaluate_runs(tmp_path / "runs", ids=ids, grids=grids, diversity=False)
        for r in part.shown:
            assert r.p_holm == full[r.claim.id].p_holm
    # a skipped diversity measurement still takes its place in the family, at p = 1, and so
    # does each design family member whose grid has not run (convs-alone, stable-*: 5)
    skipped = evaluate_runs(tmp_path / "runs", diversity=False)
    assert skipped.family == 10 and skipped.tested == 5 and "diversity" not in skipped.pending
    # --preset on a claims file without scale presets (this one): a claim untested at the
    # chosen preset but tested at another joins the family once, with that test, not also at
    # p = 1 (it did both before the regime amendment `report-family-once`)
    elsewhere = evaluate_runs(tmp_path / "runs", presets=["mini"], diversity=False)
    assert all(r.test is None for r in elsewhere.results)
    assert elsewhere.family == skipped.family and elsewhere.pending == skipped.pending
    assert elsewhere.tested == skipped.tested


def test_too_small_to_resolve_names_the_effect(tmp_path: Path) -> None:
    """Defect E: not "the observed effect is about 0" for a variance ratio of 0.62."""
    same = {**QUICK, "conv-norelu": [93.2, 94.1, 92.6]}
    write_grid_runs(tmp_path / "runs", "stem", "quick", same)
    relu = _by_id(evaluate_runs(tmp_path / "runs", ids=["relu"], diversity=False))["relu"]
    assert relu.seeds_needed is None
    assert f"a difference of {relu.test.diff:+.1f} is too small to resolve with n = 3 + 3" \
        in relu.reason and "about 0" not in relu.reason


def test_divergences_count_at_chance_with_fishers_test(tmp_path: Path) -> None:
    """Defect F: a diverged run was dropped, so an arm that diverges looked better."""
    runs = tmp_path / "runs"
    write_grid_runs(runs, "stem", "quick", {**QUICK, "conv-nobn": [37.8, 35.0]})
    cell = next(c for c in load_grid("stem", preset="quick", seeds=[2]).cells()
                if c.label_dict["stem"] == "conv-nobn")
    write_run(runs, cell.model, cell.override_dict, "diverged", None, seed=2)
    bn = _by_id(evaluate_runs(runs, ids=["bn"], diversity=False))["bn"]
    assert bn.evidence.values_b == pytest.approx([37.8, 35.0, 10.0])  # 100 / 10 classes
    assert bn.evidence.diverged == (0, 1)
    p = sp.fisher_exact([[0, 3], [1, 2]]).pvalue
    assert f"diverged 0/3 vs 1/3 (counted as chance-level top-1), Fisher exact p = {p:.3f}" \
        in " ".join(bn.evidence.notes)


def test_no_test_reason_names_the_arm_that_does_not_vary() -> None:
    """Defect G: "neither arm varies" when only one did not."""
    from reproduce.report.claims.verdicts import no_test_reason

    ev = cl.Evidence("stem", "quick", "conv", "patchify", [90.0, 90.0], [40.0, 44.0], [0, 1],
                     [0, 1])
    assert no_test_reason(ev).startswith("conv does not vary")
    ev.values_b = [40.0, 40.0]
    assert no_test_reason(ev).startswith("neither arm varies")


def test_one_seed_never_gives_a_verdict(tmp_path: Path) -> None:
    write_grid_runs(tmp_path / "runs", "stem", "mini", {"patch": [40.0], "conv": [98.0]})
    for r in evaluate_runs(tmp_path / "runs", ids=["accuracy", "stable-seeds"]).shown:
        assert r.verdict == "inconclusive" and r.test is None and r.p is None
        assert r.seeds_needed is None and "n = 1 + 1" in r.reason
    report = evaluate_runs(tmp_path / "runs", ids=["bn", "stable-lr"])
    assert {r.verdict for r in report.shown} == {"no evidence"}
    assert "srv ablate stem --preset quick" in _by_id(report)["bn"].reason
    # a claim that names its preset points at it (and at the full run that trains it)
    assert "srv ablate lr --preset quick (or srv claims --run)" in \
        _by_id(report)["stable-lr"].reason


def test_round_one_two_seed_stem_grid(tmp_path: Path, tables_env: Path) -> None:  # noqa: F811
    """srv claims on the 2-seed stem grid of the first landing, rebuilt as run directories."""
    write_grid_runs(tmp_path / "runs", "stem", "mini", STEM_2SEEDS)
    result = runner.invoke(app, ["claims", "--runs-dir", str(tmp_path / "runs"),
                                 "--no-diversity"])
    assert result.exit_code == 0, result.output
    text = (tables_env / "claims.md").read_text()
    report, hidden = text.rsplit("<!-- ", 1)  # the hidden line: the evidence it rests on
    assert report in result.output and hidden == "srv evidence: 6 tested claims, 10 runs -->\n"
    report = evaluate_runs(tmp_path / "runs", diversity=False)
    res = _by_id(report)
    # five tests (accuracy, bn, relu, convs-alone, stable-seeds), the diversity claim whose
    # measurement --no-diversity skipped and the 4 stability claims not run (at p = 1): the
    # design's family of 10
    assert report.family == 10 and report.tested == 6
    # conv's two seeds agree: its variance is floored at the resolution of 360 images
    welch = stats.welch(STEM_2SEEDS["conv"], STEM_2SEEDS["patch"], resolution=100 / 360)
    assert res["accuracy"].p == pytest.approx(welch.p) and welch.df == pytest.approx(1.0, abs=0.01)
    assert "Δ +34.3" in res["accuracy"].statistic
    # conv's two seeds agree to the image: its variance is floored at (100/360)^2 / 12
    assert res["stable-seeds"].test.sd_a == pytest.approx(100 / 360 / 12 ** 0.5)
    for key in ("bn", "relu", "convs-alone"):
        assert res[key].verdict == "inconclusive" and res[key].seeds_needed is not None
    assert res["cost"].verdict == "not tested" and res["cost"].cost["extra_gflops"] > 0.1
    # its assumption is stated, and the count at the narrower stem (docs/paper.md §1: width 64
    # adds 1.36 M params and 1.29 GFLOPs to DeiT-S; width 32 stays within the 10% bound)
    assert "hidden width 64" in res["cost"].statistic
    also = res["cost"].cost["also"]
    assert also["stem_width"] == 32 and 0 < also["extra_params"] < also["extra_gflops"] < 0.1
    assert "at stem_width 32: +2.3% params, +8.4% GFLOPs" in res["cost"].statistic
    assert res["stable-lr"].verdict == "no evidence"
    as_json = runner.invoke(app, ["claims", "accuracy", "--runs-dir", str(tmp_path / "runs"),
                                  "--format", "json"])
    (record,) = [r for r in json.loads(as_json.stdout) if r["scale_name"] == "quick"]
    assert record["id"] == "accuracy" and record["evidence"]["values_b"] == [61.9, 65.6]


def test_spread_claim_counts_a_divergence_as_chance(tmp_path: Path) -> None:
    grid = load_grid("warmup", seeds=[0, 1])
    runs = tmp_path / "runs"
    top1 = {("patch", "0"): [None, 40.0], ("patch", "1"): [55.0, 52.0],
            ("patch", "5"): [60.0, 61.0], ("patch", "10"): [58.0, 60.0],
            ("conv", "0"): [95.0, 96.0], ("conv", "1"): [97.0, 96.5],
            ("conv", "5"): [98.0, 98.1], ("conv", "10"): [97.5, 98.0]}
    for cell in grid.cells():
        value = top1[(cell.label_dict["stem"], cell.label_dict["warmup"])][cell.seed]
        status = "done" if value is not None else "diverged"
        write_run(runs, cell.model, cell.override_dict, status, value, seed=cell.seed,
                  epoch=2 if value is None else None)
    res = _by_id(evaluate_runs(runs, ids=["stable-warmup"]))["stable-warmup"]
    # patch seed 0 diverged at warmup 0: 10% (chance on 10 classes) -> its spread runs from
    # 10 to 60 (on the logit scale, the claim's link)
    from reproduce.report.claims.evidence import logit_top1

    def spread(hi: float, lo: float) -> float:
        return logit_top1(hi, 360) - logit_top1(lo, 360)

    want_b, want_a = [spread(60.0, 10.0), spread(61.0, 40.0)], [spread(98, 95), spread(98.1, 96)]
    assert res.evidence.values_b == pytest.approx(want_b)
    assert res.evidence.values_a == pytest.approx(want_a)
    assert res.p == pytest.approx(sp.ttest_ind(want_a, want_b, equal_var=False).pvalue)
    assert res.verdict == "inconclusive"  # two seeds, a wide spread of spreads


def test_claims_file_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "claims.toml"
    bad.write_text('[[claim]]\nid = "x"\ntext = "t"\ngrid = "stem"\nstatistic = "vibes"\n')
    with pytest.raises(SrvError, match="claim.*x: statistic 'vibes' is not one of"):
        cl.load_claims(bad)
    bad.write_text('[[claim]]\nid = "x"\ntext = "t"\ngrid = "stem"\nstatistic = "cost"\n'
                   'models = ["vit-s-conv", "vit-s-patch"]\nmax_extra = 0.1\n'
                   'also = { stem_wdith = 32 }\n')
    with pytest.raises(SrvError, match=r"also = \{ stem_width = N \} \(or stem = KIND\)"):
        cl.load_claims(bad)
    bad.write_text('[[claim]]\nid = "x"\ntext = "t"\ngrid = "stem"\nstatistic = "difference"\n'
                   'a = { stem = "conv" }\nb = { stme = "patch" }\n')
    monkeypatch.setenv("SRV_CLAIMS", str(bad))
    write_grid_runs(tmp_path / "runs", "stem", "mini", {"patch": [40.0], "conv": [98.0]})
    result = runner.invoke(app, ["claims", "--runs-dir", str(tmp_path / "runs"), "--no-write"])
    assert result.exit_code == 2 and "has no axis 'stme'" in result.stderr
    result = runner.invoke(app, ["claims", "nope", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2 and "no claim nope" in result.stderr


def test_a_report_without_runs_never_replaces_the_last_one(tmp_path: Path,
                                                           tables_env: Path) -> None:  # noqa: F811
    """A mistyped --runs-dir is one line and exit 2; an empty one prints the report (the cost
    claim needs no runs) but leaves tables/claims.md as the last real report wrote it."""
    (tables_env / "claims.md").write_text("the verdicts of 36 finished runs\n")
    result = runner.invoke(app, ["claims", "--runs-dir", str(tmp_path / "rnus")])
    assert result.exit_code == 2 and "no runs directory at" in result.stderr
    (tmp_path / "runs").mkdir()
    result = runner.invoke(app, ["claims", "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0 and "not written: no finished runs" in result.output
    assert "| cost" in result.output
    assert (tables_env / "claims.md").read_text() == "the verdicts of 36 finished runs\n"


def test_a_report_with_less_evidence_never_replaces_one_with_more(tmp_path: Path,
                                                                  tables_env: Path) -> None:  # noqa: F811
    """A claims.md from 2 seeds per arm is not replaced by one from 1 seed (fewer tested
    claims): one line naming --force, exit 2, the file untouched; --force replaces it."""
    write_grid_runs(tmp_path / "big", "stem", "mini", STEM_2SEEDS)
    assert runner.invoke(app, ["claims", "--runs-dir", str(tmp_path / "big"),
                               "--no-diversity"]).exit_code == 0
    before = (tables_env / "claims.md").read_text()
    small = {k: v[:1] for k, v in STEM_2SEEDS.items()}
    write_grid_runs(tmp_path / "small", "stem", "mini", small)
    args = ["claims", "--runs-dir", str(tmp_path / "small"), "--no-diversity"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "holds verdicts from more evidence (6 tested claims, 10 runs)" in result.stderr
    assert "--force" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (tables_env / "claims.md").read_text() == before
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0
    assert (tables_env / "claims.md").read_text() != before


def test_diversity_claim_measures_the_checkpoints(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny real runs (two stems, two seeds), their effective rank after the last block."""
    from conftest import TINY

    from reproduce.analysis.diversity import measure_diversity
    from reproduce.analysis.targets import grid_targets
    from reproduce.training.engine import train

    grids = tmp_path / "grids"
    grids.mkdir()
    sets = ", ".join(f"{k} = {v}" for k, v in {**TINY, "epochs": 1}.items())
    (grids / "tiny.toml").write_text(
        '[axes.stem]\nkey = "model"\nformat = "vit-mini-{value}"\nvalues = ["patch", "conv"]\n'
        f'[presets.mini]\nrecipe = "mini"\nseeds = [0, 1]\nset = {{ {sets} }}\n')
    (tmp_path / "claims.toml").write_text(
        '[[claim]]\nid = "div"\ntext = "t"\ngrid = "tiny"\nstatistic = "diversity"\n'
        'a = { stem = "conv" }\nb = { stem = "patch" }\n')
    monkeypatch.setenv("SRV_GRIDS", str(grids))
    from reproduce.experiments.cells import plan

    grid = load_grid("tiny")
    states = plan(grid, tmp_path / "runs")
    for st in states:
        assert train(st.cfg, runs_root=tmp_path / "runs", progress=False).status == "completed"
    res = evaluate_runs(tmp_path / "runs", cl.load_claims(tmp_path / "claims.toml")).results[0]
    targets, _ = grid_targets(grid, tmp_path / "runs", "last", states=plan(grid,
                                                                           tmp_path / "runs"))
    erank = [r.erank[-1] for r in measure_diversity(targets)]
    # states are patch s0, patch s1, conv s0, conv s1
    assert res.evidence.values_b == pytest.approx(erank[:2])
    assert res.evidence.values_a == pytest.approx(erank[2:])
    assert res.p == pytest.approx(stats.welch(erank[2:], erank[:2]).p)
    assert "after block 6" in res.evidence.notes[-1] or "after" in res.evidence.notes[-1]
    # beside them, the same models untrained (each run's config and seed), measured here by
    # srv analyze diversity's own path on untrained targets
    from reproduce.analysis.targets import TargetSpec

    fresh = [TargetSpec(f"{t.label} (untrained)", "model", t.config["model"], t.config,
                        seed=t.seed) for t in targets]
    before = [r.erank[-1] for r in measure_diversity(fresh)]
    assert res.evidence.untrained_b == pytest.approx(before[:2])
    assert res.evidence.untrained_a == pytest.approx(before[2:])
    assert before != pytest.approx(erank)  # one epoch of training moved them
    assert "untrained (same seeds and images)" in res.statistic


def test_main_job_ends_with_the_verdicts(tmp_path: Path) -> None:
    """srv ablate stem --preset quick over finished runs: no training, the table, then the
    verdicts of the claims the stem grid tests (and the full tables/claims.md)."""
    runs, tables = tmp_path / "runs", tmp_path / "tables"
    write_grid_runs(runs, "stem", "quick", QUICK, seeds=[100, 101, 102])  # the preset's seeds
    result = runner.invoke(app, ["ablate", "stem", "--preset", "quick", "--jobs", "2",
                                 "--seeds", "100-102", "--runs-dir", str(runs),
                                 "--tables-dir", str(tables)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "0 trained in this pass" in out
    assert out.index("## Stem ablation") < out.index("## Does the claim reproduce?")
    verdicts = out[out.index("## Does the claim reproduce?"):]
    assert "the 7 claims shown; all 12" in verdicts
    assert "| accuracy" in verdicts and "| stable-lr" not in verdicts
    assert verdicts.count("**supported**") == 3  # accuracy, bn, relu
    assert "has a checkpoint (last.pt) to measure" in verdicts  # hand-written runs: no weights
    assert "| stable-lr" in (tables / "claims.md").read_text()
    assert (tables / "stem-quick-seeds100-102.md").exists()  # not the preset's seeds: named so


def test_one_calibration_rule_for_the_design_and_each_claims_preset(tmp_path: Path) -> None:
    """A confirmatory preset's seeds may be none of its grid's calibration seeds, whether they
    are recorded in [design] or on a claim; the design's family is every testable claim."""
    src = cl.claims_path().read_text()
    cs = cl.load_claims()
    assert cs.design is not None and set(cs.design.family) == {
        c.id for c in cs.claims if c.statistic != "cost" and not c.not_testable}
    assert {c.id: c.preset for c in cs.claims}["convs-alone"] == "quick-linear"
    assert cl.calibration_seeds(cs.claims, cs.design, "stem") == set(range(10)) | {200, 201, 202}
    path = tmp_path / "claims.toml"
    # a claim's calibration seed that is a seed of the [design]'s preset (stem / quick, 100-103)
    path.write_text(src.replace("calibration_seeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 200, 201, "
                                "202]", "calibration_seeds = [101]"))
    with pytest.raises(SrvError, match=r"\[design\]: seeds 101 of stem / quick were used in "
                                       r"calibration"):
        cl.load_claims(path)
    # the [design]'s calibration seed that is a seed of a claim's preset (stem / quick-linear)
    path.write_text(src.replace("calibration_seeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n",
                                "calibration_seeds = [0, 102]\n"))
    with pytest.raises(SrvError, match=r"\[design\]: seeds 102 of stem / quick were used"):
        cl.load_claims(path)
    # a claim's own calibration seed among its preset's seeds
    path.write_text(src.replace('preset = "quick"\ncalibration = "docs/claims-calibration-'
                                'stability.jsonl"\ncalibration_seeds = [200, 201, 202]',
                                'preset = "quick"\ncalibration_seeds = [103]', 1))
    with pytest.raises(SrvError, match=r"stable-lr: seeds 103 of lr / quick were used"):
        cl.load_claims(path)
    path.write_text(src.replace('preset = "quick-linear"', 'preset = "quick-lin"'))
    with pytest.raises(SrvError, match="convs-alone: grid 'stem' has no preset 'quick-lin'"):
        cl.load_claims(path)
    path.write_text(src.replace('"stable-edf", "diversity"', '"diversity"'))
    with pytest.raises(SrvError, match=r"\[design\]: family lacks stable-edf; Holm's family"):
        cl.load_claims(path)


def test_a_calibration_preset_is_never_evidence(tmp_path: Path) -> None:
    """The regime calibration's runs (stem / regime-cal, calibration = true) chose the scale: a
    claim finds no evidence in them, however many seeds they have."""
    from test_tables import write_run

    runs = tmp_path / "runs"
    grid = load_grid("stem", preset="regime-cal", axes={"train": ["5000"], "epochs": ["5"],
                                                        "batch": ["64"]})
    for cell in grid.cells():
        top1 = {"patch": 84.0, "conv": 88.0}[cell.label_dict["stem"]] + cell.seed % 10
        write_run(runs, cell.model, cell.override_dict, "done", top1, seed=cell.seed,
                  recipe=cell.recipe)
    res = _by_id(evaluate_runs(runs, ids=["accuracy"]))["accuracy"]
    assert res.evidence is None and res.verdict != "supported"

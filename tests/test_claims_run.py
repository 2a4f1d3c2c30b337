"""srv claims --run: the plan over every grid the claims need (order, shared runs, skip of
finished cells), its time estimate, the ImageNet-scale plan, bad input; and the calibration
export, on hand-written run folders."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import evaluate_runs
from test_tables import write_run
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.experiments import RunOptions, campaign
from reproduce.experiments import claims_plan as cr
from reproduce.experiments.local import Outcome
from reproduce.recipes.grids import load_grid
from reproduce.report import claims as cl
from reproduce.training.config import resolve_config

runner = CliRunner()


def _done(runs: Path, cell, top1: float = 90.0, wall: float | None = None) -> Path:  # noqa: ANN001
    """A finished run of a grid cell; with ``wall``, result.json says its time and updates."""
    run = write_run(runs, cell.model, cell.override_dict, "done", top1, seed=cell.seed)
    if wall is not None:
        res = json.loads((run / "result.json").read_text())
        (run / "result.json").write_text(json.dumps({**res, "wall_time_s": wall, "steps": 88}))
    return run


def test_claims_name_grids_in_order_and_the_runs_they_share() -> None:
    grids = cr.claim_grids(cl.load_claims().claims)
    names = [(g.name, g.preset) for g, _ in grids]
    assert names[:2] == [("stem", "quick"), ("stem", "quick-linear")]
    assert set(names) == {("stem", "quick"), ("stem", "quick-linear"), ("lr", "quick"),
                          ("warmup", "quick"), ("optimizer", "quick"),
                          ("lr-wd-edf", "quick")}
    why = {g.name + "/" + g.preset: ids for g, ids in grids}
    assert why["stem/quick-linear"] == ["convs-alone"] and why["lr/quick"] == ["stable-lr"]
    # the quick presets keep their seeds apart from the calibration's (claims file)
    cs = cl.load_claims()
    for grid, _ in grids:
        assert not set(grid.seeds) & cl.calibration_seeds(cs.claims, cs.design, grid.name)


def test_plan_order_shared_runs_and_finished_cells(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    lr = load_grid("lr", preset="quick", seeds=[100], axes={"lr": ["0.001", "0.004"]})
    warm = load_grid("warmup", preset="quick", seeds=[100], axes={"warmup": ["0", "3"]})
    done = next(c for c in lr.cells() if c.label_dict == {"stem": "patch", "lr": "0.004"})
    _done(runs, done, wall=110.0)  # 1.25 s per update, measured
    stages = campaign.plan_stages([(lr, ["stable-lr"]), (warm, ["stable-warmup"])], runs)
    assert [s.grid.name for s in stages] == ["lr", "warmup"]
    # warmup 3 at 8 epochs is lr 1e-3 at the quick scale: same run folder, trained once
    assert len(stages[1].shared) == 2 and stages[0].shared == set()
    options = RunOptions(jobs=2)
    assert [s.cell.describe() for s in stages[0].new(options)] == [
        "stem=patch lr=0.001 seed=100", "stem=conv lr=0.001 seed=100",
        "stem=conv lr=0.004 seed=100"]
    assert [s.cell.describe() for s in stages[1].new(options)] == [
        "stem=patch warmup=0 seed=100", "stem=conv warmup=0 seed=100"]
    for s in stages[0].states + stages[1].states:
        s.steps_per_epoch = 11
    lines, total = campaign.stage_lines(stages, options, campaign.StepTimes(runs))
    # 88 updates a cell: the patchify cells at the measured 1.25 s of the finished patchify run
    # (the lr and warmup do not change an update's time), the conv ones at the assumed rate
    # (no conv run has finished: another model's time never counts)
    stated = campaign.STATED_S_PER_STEP
    assert total == pytest.approx((2 * 88 * 1.25 + 3 * 88 * stated) / 2)
    assert "4 cells (1 done, 3 pending); 3 to train, about 2 min at --jobs 2 (cell times: 2 at " \
           "the assumed rate; 1 extrapolated from matching runs)" in lines[0]
    assert "(2 pending, 2 shared); 2 to train" in lines[1]
    # the run: in order, the shared cells trained once, the finished one skipped
    trained: list[str] = []

    def train(state, root: Path, restart: bool) -> Outcome:  # noqa: ANN001
        trained.append(state.cell.describe())
        _done(root, state.cell)
        return Outcome("completed")

    summaries = campaign.run_stages(stages, runs, options.__class__(jobs=1), train_fn=train)
    assert trained == ["stem=patch lr=0.001 seed=100", "stem=conv lr=0.001 seed=100",
                       "stem=conv lr=0.004 seed=100", "stem=patch warmup=0 seed=100",
                       "stem=conv warmup=0 seed=100"]
    assert all(s.ok for s in summaries)
    assert {s.status for st in stages for s in st.states} == {"done"}


def test_stated_figure_without_runs_and_sam_counts_twice(tmp_path: Path) -> None:
    opt = load_grid("optimizer", preset="quick", seeds=[100], axes={"opt": ["adamw", "sam"],
                                                                      "stem": ["conv"]})
    stages = campaign.plan_stages([(opt, [])], tmp_path / "none")
    for s in stages[0].states:
        s.steps_per_epoch = 11
    _, total = campaign.stage_lines(stages, RunOptions(), campaign.StepTimes(tmp_path / "none"))
    assert total == pytest.approx(88 * campaign.STATED_S_PER_STEP * 3)


def test_dry_run_times_come_from_matching_runs_only(tmp_path: Path) -> None:
    """The CPU dry runs give minutes on this machine from finished runs of the same model and
    config only (seed and lr schedule aside): an unrelated 1-epoch run changes nothing; a
    finished cell of the same config (another seed) is what the estimate extrapolates from."""
    runs = tmp_path / "runs"
    stated = campaign.STATED_S_PER_STEP

    def time_line(*args: str) -> str:
        result = runner.invoke(app, [*args, "--dry-run", "--runs-dir", str(runs)])
        assert result.exit_code == 0, result.output
        return next(line for line in result.stdout.splitlines() if "time: " in line)

    quick = ("ablate", "stem", "--preset", "quick")
    empty = time_line(*quick)
    assert f"about {campaign.format_seconds(16 * 88 * stated)} at --jobs 1 (16 cells at the " \
           f"assumed rate: {stated} s per update" in empty
    # srv train vit-mini-conv --epochs 1, finished (and slow): another epoch count, no match
    unrelated = write_run(runs, "vit-mini-conv", {"epochs": 1}, "done", 40.0)
    res = json.loads((unrelated / "result.json").read_text())
    (unrelated / "result.json").write_text(json.dumps({**res, "wall_time_s": 50.0, "steps": 11}))
    assert time_line(*quick) == empty
    # a finished conv cell of the quick scale at another seed: the 4 conv cells match it
    conv = next(c for c in load_grid("stem", preset="quick").cells()
                if c.label_dict["stem"] == "conv")
    _done(runs, dataclasses.replace(conv, seed=7), wall=132.0)
    line = time_line(*quick)
    assert f"about {campaign.format_seconds(12 * 88 * stated + 4 * 132.0)} at --jobs 1" in line
    assert "12 cells at the assumed rate" in line
    assert f"4 cells extrapolated from 1 matching run in {runs}" in line
    train = time_line("train", "vit-mini-conv", "--epochs", "8", "--warmup-epochs", "3")
    assert f"about {campaign.format_seconds(132.0)} on this machine (extrapolated from 1 " \
           f"matching run in {runs})" in train
    assert "assumed rate" in time_line("train", "vit-mini-conv")  # 15 epochs: no match


def test_imagenet_dry_run_prints_runs_and_gpu_hours(tmp_path: Path) -> None:
    result = runner.invoke(app, ["claims", "stable-lr", "longer", "cost", "--run", "--dry-run",
                                 "--scale", "imagenet", "--img-per-s", "1000",
                                 "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    out = result.output
    seeds = len(load_grid("lr", preset="quick").seeds)
    r = resolve_config("vit-s-patch", "deit", {}).recipe
    from reproduce.training.builders import steps_per_epoch

    images = steps_per_epoch(r, 1)[0] * r.batch_size * r.epochs  # one 300-epoch DeiT run
    hours = 8 * seeds * images / 1000 / 3600  # 2 stems x 4 lr values
    assert f"stable-lr: lr / full (deit recipe), {8 * seeds} runs (8 cells x {seeds} seeds, " \
           f"--seeds 100-103), 300 epochs, {8 * seeds * images:,} training images: " \
           f"{hours:,.0f} GPU-hours, about {hours / 8 / 24:.1f} days on 8 GPUs" in out
    # longer: the patchify ViT at the shortest and the longest schedule only
    short = images // 300 * 100
    assert f"longer: epochs / full (deit recipe), {2 * seeds} runs" in out
    assert f"100/400 epochs, {seeds * (short * 5):,} training images" in out
    assert "cost: no runs" in out and "--img-per-s" in out
    assert not (tmp_path / "runs").exists()


def test_the_seeds_a_verdict_needs_have_one_source(tmp_path: Path) -> None:
    """The claims file's [design] seeds, quoted by the README, srv ablate --help, the dry runs'
    seeds note and the ImageNet-scale plan alike."""
    from conftest import REPO

    from reproduce.recipes.design import design_seeds
    from reproduce.training.cost import seeds_note

    assert design_seeds() == list(cl.load_claims().design.seeds) == [100, 101, 102, 103]
    readme = (REPO / "README.md").read_text()
    assert "--seeds 100-103 --backend slurm" in readme and "--seeds 0-2" not in readme
    help_text = " ".join(runner.invoke(app, ["ablate", "--help"], env={"COLUMNS": "300"})
                         .stdout.split())
    assert "add --seeds 100-103, the claims file's design seeds" in help_text
    assert seeds_note(1).endswith("add --seeds 100-103")
    plan = runner.invoke(app, ["claims", "accuracy", "--run", "--dry-run", "--scale",
                               "imagenet", "--img-per-s", "1000"]).stdout
    assert "(2 cells x 4 seeds, --seeds 100-103)" in plan


@pytest.mark.parametrize("args, message", [
    (["nope", "--run"], "no claim nope"),
    (["--run", "--scale", "huge"], "no scale 'huge': choose quick or regime or imagenet"),
    (["--run", "--scale", "imagenet"], "--scale imagenet is a plan for a GPU cluster"),
    (["--dry-run"], "--dry-run and --scale go with --run"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["claims", *args, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("srv: error: ") and message in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_unwritable_runs_folder_is_refused_before_anything(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["claims", "accuracy", "--run", "--runs-dir",
                                 str(blocker / "runs")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("srv: error: runs folder ") and "is not a folder" in \
        result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_calibration_export_writes_each_grids_curves(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import calibration_export as ce

    runs = tmp_path / "runs"
    lr = load_grid("lr", preset="quick", seeds=[200, 201])
    for cell in lr.cells()[:4]:  # patch at lr 5e-4 and 1e-3, seeds 200 and 201
        _done(runs, cell, top1=40.0 + cell.seed - 200, wall=100.0)
    out = tmp_path / "cal.jsonl"
    assert ce.main([str(runs), "--out", str(out)]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    lr_recs = [r for r in recs if r["grid"] == "lr"]
    assert [(r["lr"], r["seed"], r["top1"]) for r in lr_recs] == [
        ("0.0005", 200, 40.0), ("0.0005", 201, 41.0), ("0.001", 200, 40.0), ("0.001", 201, 41.0)]
    first = lr_recs[0]
    assert first["stem"] == "patch" and first["tag"] == "lr=0.0005" and first["t"] == 100.0
    assert first["curve"] == pytest.approx([40.0 * e / 8 for e in range(1, 9)])
    # lr 1e-3 is also the stem grid's patchify cell, the warmup grid's 3-epoch cell, the
    # AdamW cell and the 8-epoch patchify cell
    assert {(r["grid"], r["seed"]) for r in recs if r["grid"] != "lr"} == {
        ("stem", 200), ("stem", 201), ("warmup", 200), ("warmup", 201), ("optimizer", 200),
        ("optimizer", 201), ("epochs", 200), ("epochs", 201)}


def test_paired_edf_claim_against_scipy(tmp_path: Path) -> None:
    """stable-edf on hand-written lr-wd-edf runs: Wilcoxon's signed-rank test on the per-draw
    error differences, as scipy computes it independently; a diverged draw counts at chance."""
    import numpy as np
    from scipy import stats as sp

    runs = tmp_path / "runs"
    grid = load_grid("lr-wd-edf", preset="quick")
    rng = np.random.default_rng(0)
    conv_top1 = list(90 - 10 * rng.random(16))
    patch_top1 = list(50 + 15 * rng.random(16))
    patch_top1[3] = None  # s03 diverged for patchify
    for cell in grid.cells():
        i = int(cell.label_dict["sample"][1:])
        top1 = (conv_top1 if cell.label_dict["stem"] == "conv" else patch_top1)[i]
        write_run(runs, cell.model, cell.override_dict, "done" if top1 is not None else
                  "diverged", top1, seed=cell.seed)
    res = {r.claim.id: r for r in evaluate_runs(runs, diversity=False).results}["stable-edf"]
    err_conv = [100 - v for v in conv_top1]
    err_patch = [100 - (v if v is not None else 10.0) for v in patch_top1]  # chance: 10 classes
    expect = sp.wilcoxon(err_conv, err_patch)
    assert res.test.n == 16 and res.p == pytest.approx(expect.pvalue)
    assert res.test.statistic == pytest.approx(expect.statistic)
    assert res.test.diff == pytest.approx(np.mean(np.subtract(err_conv, err_patch)))
    pooled = np.median(err_conv + err_patch)
    assert res.test.under_a == pytest.approx(np.mean(np.array(err_conv) <= pooled)) == 1.0
    assert res.verdict == "supported" and res.evidence.preset == "quick"
    assert "16 paired (lr, wd) draws" in res.statistic and "Wilcoxon signed-rank" in \
        res.statistic
    # the same draws with the stems' errors swapped: the other way
    runs2 = tmp_path / "swapped"
    for cell in grid.cells():
        i = int(cell.label_dict["sample"][1:])
        top1 = (patch_top1 if cell.label_dict["stem"] == "conv" else conv_top1)[i]
        write_run(runs2, cell.model, cell.override_dict, "done" if top1 is not None else
                  "diverged", top1, seed=cell.seed)
    swapped = {r.claim.id: r for r in evaluate_runs(runs2, ids=["stable-edf"],
                                                  diversity=False).results}["stable-edf"]
    assert swapped.verdict == "contradicted" and swapped.p == pytest.approx(expect.pvalue)


def test_draws_needed_is_a_stated_approximation() -> None:
    from scipy import stats as sp

    from reproduce.report.stats import WILCOXON_ARE, draws_needed

    z = sp.norm.ppf(1 - 0.01 / 2) + sp.norm.ppf(0.8)
    assert draws_needed(2.0, 10.0, 0.01) == int(np.ceil((z * 5) ** 2 / WILCOXON_ARE))
    assert draws_needed(50.0, 1.0, 0.05) == 6  # the exact test's floor
    assert draws_needed(0.0, 1.0, 0.05) is None

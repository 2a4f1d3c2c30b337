"""Grid files: every shipped grid loads and resolves, expansion, CLI changes, bad grids."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.errors import SrvError
from reproduce.models import StemSpec, get_entry
from reproduce.recipes.grids import (
    Cell,
    list_grids,
    load_grid,
    parse_axis_option,
    parse_list,
    parse_seeds,
)
from reproduce.recipes.recipe import parse_overrides
from reproduce.training.config import resolve_config

runner = CliRunner()

GRIDS = ("stem", "warmup", "lr", "optimizer", "stride", "epochs", "lr-wd-edf")
STEMS = ["patch", "patch-bnrelu", "conv", "conv-norelu", "conv-nobn", "conv-linear", "conv-ln",
         "xiao"]


def test_one_grid_per_paper_experiment() -> None:
    assert set(GRIDS) <= set(list_grids())


@pytest.mark.parametrize("name", GRIDS)
@pytest.mark.parametrize("preset", ["mini", "full"])
def test_every_grid_resolves_at_every_scale(name: str, preset: str) -> None:
    grid = load_grid(name, preset)
    cells = grid.cells()
    assert cells and grid.recipe in ("mini", "deit", "xiao")
    names = set()
    for cell in cells:
        get_entry(cell.model)
        cfg = resolve_config(cell.model, cell.recipe, {**cell.override_dict, "seed": cell.seed})
        names.add(cfg.run_name)
        stem = cfg.recipe.stem
        if stem and "," in stem:  # a spec: its total stride is the model's
            assert StemSpec.parse(stem).stride == (4 if preset == "mini" else 16)
        if preset == "mini":
            assert cell.model.startswith("vit-mini-") and cfg.recipe.dataset == "digits"
    assert len(names) == len(cells), "two cells share a run directory"


_MODELS: dict = {}  # meta-device models, shared by the checks of every grid


@pytest.mark.parametrize("name", GRIDS)
@pytest.mark.parametrize("preset", ["mini", "full"])
def test_every_cell_of_every_grid_can_start(name: str, preset: str, tmp_path: Path,
                                            imagenet_layout: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """What srv ablate --dry-run checks: each cell's model (meta device, one forward pass),
    optimizer, schedule, EMA, transforms and the engine's refusals, without training (the full
    presets on an image folder, which they need)."""
    from reproduce.experiments.cells import check_cells, plan

    monkeypatch.setenv("SRV_CACHE_DIR", str(tmp_path / "cache"))  # built here, not remembered
    data = {"data_path": str(imagenet_layout)} if preset == "full" else None
    states = plan(load_grid(name, preset, overrides=data), tmp_path / "runs")
    assert check_cells(states, 1, _MODELS) == []
    if preset == "full":  # and under torchrun on 8 GPUs
        assert check_cells(states, 8, _MODELS) == []


def test_a_checked_cell_is_not_built_again(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated dry run answers from srv's cache (no model build, no timm import); a changed
    value, world size or training-set size is built again, and a failed build is never
    remembered."""
    from reproduce.experiments import cells
    from reproduce.training import builders

    monkeypatch.setenv("SRV_CACHE_DIR", str(tmp_path / "cache"))
    builds: list[str] = []
    real = builders.build_parts

    def counting(cfg, *args, **kwargs):  # noqa: ANN001, ANN202
        builds.append(cfg.run_name)
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(builders, "build_parts", counting)
    grid = load_grid("stem", "quick")
    first = cells.plan(grid, tmp_path / "runs")
    assert cells.check_cells(first, 1, _MODELS) == [] and len(builds) == len(first) == 16
    again = cells.plan(grid, tmp_path / "runs")
    assert cells.check_cells(again, 1, _MODELS) == [] and len(builds) == 16
    assert [s.steps_per_epoch for s in again] == [s.steps_per_epoch for s in first]
    assert {s.steps_per_epoch for s in first} == {11}  # 1,437 digits, batch 128
    assert cells.check_cells(again, 2, _MODELS) == [] and len(builds) == 32  # world size
    subset = cells.plan(load_grid("stem", "quick", overrides={"train_subset": 500}),
                        tmp_path / "runs")
    assert cells.check_cells(subset, 1, _MODELS) == [] and len(builds) == 48
    assert {s.steps_per_epoch for s in subset} == {3}
    odd = cells.plan(load_grid("stem", "quick", overrides={"batch_size": 5000}),
                     tmp_path / "runs")
    for _ in range(2):  # refused both times: a failure is not cached
        bad = cells.check_cells(odd, 1, _MODELS)
        assert len(bad) == 16 and "fewer than one global batch" in bad[0][1]
    assert len(builds) == 80


def test_a_cell_that_cannot_run_fails_the_dry_run(tmp_path: Path, imagenet_layout: Path) -> None:
    """SAM cannot run under fp16 loss scaling: the optimizer grid at full scale trains in bf16;
    forcing DeiT's fp16 back is refused at --dry-run, cell by cell, not hours into a job."""
    args = ["ablate", "optimizer", "--preset", "full", "--dry-run", "--runs-dir",
            str(tmp_path / "runs"), "--data", str(imagenet_layout)]
    assert runner.invoke(app, args).exit_code == 0
    result = runner.invoke(app, [*args, "--set", "amp=fp16"])
    assert result.exit_code == 2, result.output
    refused = [line for line in result.stdout.splitlines() if "cannot run" in line]
    assert len(refused) == 2 and all("opt=sam" in line and "fp16" in line for line in refused)
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("srv: error: 2 of 6 cells of grid 'optimizer' (full)")
    assert not (tmp_path / "runs").exists()


def test_stem_grid_covers_the_scaled_relu_components() -> None:
    grid = load_grid("stem")
    assert grid.preset == "mini" and grid.seeds == [0]
    assert [c.label_dict["stem"] for c in grid.cells()] == STEMS
    assert [c.model for c in grid.cells()] == [f"vit-mini-{s}" for s in STEMS]
    assert [c.model for c in load_grid("stem", "full").cells()] == [f"vit-s-{s}" for s in STEMS]
    assert grid.axis("stem").show("conv") == "conv, BN + ReLU (scaled ReLU)"


def test_two_dimensional_grids_and_their_axes() -> None:
    warmup = load_grid("warmup")
    assert warmup.row_axes == ["stem"] and warmup.column_axes == ["warmup"]
    assert [c.describe() for c in warmup.cells()[:2]] == [
        "stem=patch warmup=0 seed=0", "stem=patch warmup=1 seed=0"]
    lr = load_grid("lr")
    assert sorted({c.override_dict["lr"] for c in lr.cells()}) == [5e-4, 1e-3, 2e-3, 4e-3]
    opt = load_grid("optimizer")
    sgd = [c for c in opt.cells() if c.label_dict["opt"] == "sgd"][0]
    assert sgd.override_dict["opt"] == "momentum" and sgd.override_dict["momentum"] == 0.9
    assert {c.override_dict["opt"] for c in opt.cells()} == {"adamw", "momentum", "sam-adamw"}
    assert load_grid("optimizer", "full").axis("opt").points[1][1]["lr"] == 0.2
    assert [c.override_dict["epochs"] for c in load_grid("epochs").cells()][:3] == [8, 15, 30]
    assert [c.override_dict["epochs"] for c in load_grid("epochs", "full").cells()][:3] == [
        100, 300, 400]


def test_stride_grid_names_its_configurations_honestly() -> None:
    grid = load_grid("stride")
    labels = grid.axis("stride").labels
    assert labels[0] == "s2-1-1-2"  # the mini conv-stem itself
    for label, overrides in grid.axis("stride").points:
        spec = StemSpec.parse(overrides["stem"])
        assert "-".join(str(layer.stride) for layer in spec.layers) == label[1:]
    assert "not Xiao et al.'s" in grid.path.read_text()


def test_edf_samples_are_reproducible_paired_and_in_range() -> None:
    grid = load_grid("lr-wd-edf")
    assert grid.table_kind == "edf"
    cells = grid.cells()
    assert len(cells) == 2 * 16
    patch = [c.override_dict for c in cells if c.label_dict["stem"] == "patch"]
    conv = [c.override_dict for c in cells if c.label_dict["stem"] == "conv"]
    assert patch == conv  # the same (lr, wd) samples for every model
    for o in patch:
        assert 2.5e-4 <= o["lr"] <= 8e-3 and 0.02 <= o["weight_decay"] <= 0.8
    assert len({o["lr"] for o in patch}) == 16
    assert [c.override_dict for c in load_grid("lr-wd-edf").cells()] == [
        c.override_dict for c in cells]
    assert len(load_grid("lr-wd-edf", samples=4).cells()) == 8
    full = load_grid("lr-wd-edf", "full")
    assert len(full.cells()) == 128 and full.fixed == {"epochs": 50} and full.recipe == "xiao"


def test_command_line_changes() -> None:
    grid = load_grid("lr", seeds=[0, 1, 2], axes={"stem": ["conv"], "lr": ["1e-3", "3e-3"]},
                     overrides={"epochs": 2})
    cells = grid.cells()
    assert len(cells) == 1 * 2 * 3
    assert [c.override_dict["lr"] for c in cells[::3]] == [1e-3, 3e-3]
    assert all(c.override_dict["epochs"] == 2 for c in cells)
    assert [c.seed for c in cells[:3]] == [0, 1, 2]
    with pytest.raises(SrvError, match="not a value of axis 'stem'"):
        load_grid("stem", axes={"stem": ["convv"]})
    with pytest.raises(SrvError, match="no axis 'warmup'"):
        load_grid("stem", axes={"warmup": ["1"]})
    with pytest.raises(SrvError, match="swept by axis 'lr'"):
        load_grid("lr", overrides={"lr": 1e-3})
    with pytest.raises(SrvError, match="no preset 'huge'"):
        load_grid("stem", "huge")
    with pytest.raises(SrvError, match="no grid 'nope'"):
        load_grid("nope")
    with pytest.raises(SrvError, match="no random axis"):
        load_grid("stem", samples=3)


def test_comma_lists_are_split_by_our_own_code() -> None:
    assert parse_seeds("0,1, 2") == [0, 1, 2]
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_list("patch,conv") == ["patch", "conv"]
    assert parse_axis_option(["stem=patch,conv", "lr=1e-3"]) == {
        "stem": ["patch", "conv"], "lr": ["1e-3"]}
    for bad in ("0,,1", "", "a"):
        with pytest.raises(SrvError):
            parse_seeds(bad)
    with pytest.raises(SrvError, match="AXIS=v1,v2"):
        parse_axis_option(["stem"])


def test_cell_round_trips_through_srv_train_options() -> None:
    """The torchrun backend rebuilds a cell with `srv train --set ...`: same run directory."""
    for name in ("stride", "optimizer", "lr-wd-edf"):
        for cell in load_grid(name).cells()[:4]:
            args = cell.set_args()
            pairs = [args[i + 1] for i in range(0, len(args), 2)]
            parsed = parse_overrides(pairs)
            assert parsed == {**cell.override_dict, "seed": cell.seed}
            a = resolve_config(cell.model, cell.recipe, {**cell.override_dict, "seed": cell.seed})
            b = resolve_config(cell.model, cell.recipe, parsed)
            assert a.run_name == b.run_name
            assert Cell.from_dict(cell.to_dict()) == cell


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "message"), [
    ('[presets.mini]\nrecipe = "mini"\n[axes.x]\nvalues = [1]\n', "needs key"),
    ('[presets.mini]\n[axes.x]\nkey = "lr"\nvalues = [1]\n', "needs recipe"),
    ('colour = 1\n[presets.mini]\nrecipe = "mini"\n', "unknown top-level"),
    ('[presets.mini]\nrecipe = "mini"\n[axes.x]\nkey = "lr"\nvalues = [1]\nfoo = 2\n',
     "unknown axis field"),
    ('[presets.mini]\nrecipe = "mini"\n[axes.x]\nkey = "lr"\nvalues = [1, 1]\n', "duplicate"),
    ('[table]\nrows = ["y"]\n[presets.mini]\nrecipe = "mini"\n[axes.x]\nkey = "lr"\n'
     'values = [1]\n', "'y' is not an axis"),
    ('[presets.mini]\nrecipe = "mini"\nseeds = []\n[axes.x]\nkey = "lr"\nvalues = [1]\n',
     "seeds must be"),
    ('[presets.mini]\nrecipe = "mini"\nseeds = [-1]\n[axes.x]\nkey = "lr"\nvalues = [1]\n',
     "seeds must be a non-empty list of integers >= 0"),
    ('[presets.mini]\nrecipe = "mini"\n[axes.x]\nkind = "random"\nsamples = 2\n'
     'ranges = { lr = [1.0, 0.5] }\n', "0 < low < high"),
    ("[presets.mini\n", "not valid TOML"),
])
def test_bad_grid_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SrvError, match=message):
        load_grid(_write(tmp_path / "g.toml", text))


def test_negative_seeds_on_the_command_line_are_refused(tmp_path: Path) -> None:
    # numpy's SeedSequence (per-sample seeds) takes no negative entropy: refuse up front
    result = runner.invoke(app, ["ablate", "stem", "--seeds", "-1", "--dry-run"])
    assert result.exit_code == 2 and "--seeds must be" in result.stderr
    result = runner.invoke(app, ["train", "vit-mini-conv", "--set", "seed=-1", "--runs-dir",
                                 str(tmp_path / "runs")])
    assert result.exit_code == 2 and "'seed' must be >= 0" in result.stderr


def test_dry_run_lists_every_cell_without_training(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ablate", "stem", "--dry-run", "--runs-dir",
                                 str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if " pending " in line]
    assert len(lines) == 8
    for stem, line in zip(STEMS, lines, strict=True):
        assert f" {stem} " in line and f"vit-mini-{stem}-" in line
    assert "8 cells: 8 pending" in result.output
    assert not (tmp_path / "runs").exists()


def test_bad_ablate_input_is_one_line_and_exit_2() -> None:
    for args, message in ((["ablate", "nope", "--dry-run"], "no grid 'nope'"),
                          (["ablate", "stem", "--seeds", "0,,1", "--dry-run"], "empty item"),
                          (["ablate", "stem", "--set", "lrr=1", "--dry-run"], "did you mean"),
                          (["ablate", "stem", "--axis", "stem=foo", "--dry-run"],
                           "not a value of axis")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("srv: error: ") and message in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


#: every seed a preset or calibration used before issue 28's regime calibration
USED_SEEDS = set(range(10)) | set(range(100, 104)) | set(range(200, 203))


def test_a_preset_may_add_axes_of_its_own(tmp_path: Path) -> None:
    """``add_axes`` sweeps a recipe key at one preset only (after the grid's axes); an axis the
    grid already has must be changed under ``axes``, not added again."""
    path = tmp_path / "g.toml"
    path.write_text('[axes.stem]\nkey = "model"\nformat = "vit-mini-{value}"\n'
                    'values = ["patch", "conv"]\n[presets.a]\nrecipe = "mini"\n'
                    '[presets.b]\nrecipe = "mini"\ncalibration = true\n'
                    '[presets.b.add_axes.train]\nkey = "train_subset"\nvalues = [256, 512]\n')
    plain, cal = load_grid(path, "a"), load_grid(path, "b")
    assert len(plain.cells()) == 2 and not plain.calibration
    assert cal.calibration and [a.name for a in cal.axes] == ["stem", "train"]
    assert [(c.label_dict["train"], c.override_dict["train_subset"]) for c in cal.cells()][:2] \
        == [("256", 256), ("512", 512)]
    assert load_grid(path, "b", axes={"train": ["1024"]}).cells()[0].override_dict == {
        "train_subset": 1024}
    path.write_text(path.read_text().replace("add_axes.train", "add_axes.stem"))
    with pytest.raises(SrvError, match="already has axis 'stem'.*presets.b.axes.stem"):
        load_grid(path, "b")
    path.write_text(path.read_text().replace("add_axes.stem", "add_axes.train")
                    .replace("calibration = true", "calibration = 1"))
    with pytest.raises(SrvError, match="calibration must be true or false"):
        load_grid(path, "b")


def test_an_override_may_depend_on_another_axis(tmp_path: Path) -> None:
    """``lr = { by = "stem", patch = ..., conv = ... }``: each stem's cell gets its own value
    (SGD's lr tuned per stem, issue 28 (3)); an axis not swept, or a label without a value, is
    one clear error."""
    path = tmp_path / "g.toml"
    path.write_text('[axes.stem]\nkey = "model"\nformat = "vit-mini-{value}"\n'
                    'values = ["patch", "conv"]\n[axes.opt.values]\nadamw = { opt = "adamw" }\n'
                    'sgd = { opt = "momentum", lr = { by = "stem", patch = 0.05, conv = 0.1 } }\n'
                    '[presets.a]\nrecipe = "mini"\n')
    got = {(c.label_dict["stem"], c.label_dict["opt"]): c.override_dict
           for c in load_grid(path, "a").cells()}
    assert got[("patch", "sgd")] == {"opt": "momentum", "lr": 0.05}
    assert got[("conv", "sgd")] == {"opt": "momentum", "lr": 0.1}
    assert got[("conv", "adamw")] == {"opt": "adamw"}
    text = path.read_text()
    for old, new, message in (('by = "stem"', 'by = "width"', "no swept axis 'width'"),
                              (", conv = 0.1", "", "no value for stem = 'conv'")):
        path.write_text(text.replace(old, new))
        with pytest.raises(SrvError, match=message):
            load_grid(path, "a").cells()


def test_the_regime_calibration_plans_patch_and_conv_on_new_seeds(tmp_path: Path) -> None:
    """Issue 28: srv ablate stem --preset regime-cal plans both stems over train subset x epochs
    x batch on Fashion-MNIST, on seeds no other preset or calibration used, and estimates its
    cost (here from a tiny IDX folder: a dry run reads no image)."""
    from test_fashion import write_idx

    grid = load_grid("stem", "regime-cal")
    assert grid.calibration and grid.recipe == "fmnist"
    assert not set(grid.seeds) & USED_SEEDS and len(grid.seeds) == 3
    for other in grid.presets:
        if other not in ("regime-cal", "regime-cal-2"):  # round 2: the same calibration seeds
            assert not set(grid.seeds) & set(load_grid("stem", other).seeds)
    assert [a.name for a in grid.axes] == ["stem", "train", "epochs", "batch"]
    cells = grid.cells()
    assert len(cells) == 2 * 2 * 1 * 2 * 3  # stem x train x epochs x batch x seeds
    assert {c.model for c in cells} == {"vit-mini-patch", "vit-mini-conv"}
    cfg = resolve_config(cells[0].model, cells[0].recipe, {**cells[0].override_dict, "seed": 300})
    assert cfg.recipe.dataset == "fashion-mnist" and cfg.recipe.val_subset >= 1000
    data = write_idx(tmp_path / "fmnist")
    result = runner.invoke(app, ["ablate", "stem", "--preset", "regime-cal", "--dry-run",
                                 "--data", str(data), "--img-per-s", "210", "--runs-dir",
                                 str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "24 cells: 24 pending" in result.output
    assert "24 cells to train, 898,560 training images" in result.output
    assert "calibration seeds per cell" in result.output
    missing = runner.invoke(app, ["ablate", "stem", "--preset", "regime-cal", "--dry-run",
                                  "--data", str(tmp_path), "--runs-dir", str(tmp_path / "r")])
    assert missing.exit_code == 2 and "no Fashion-MNIST at" in missing.stdout
    assert not (tmp_path / "runs").exists()

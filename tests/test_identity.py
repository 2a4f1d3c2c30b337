"""Run identity: the hash covers what changes the result and nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reproduce.data.jpeg_folder import JpegFolderSpec, write_jpeg_folder
from reproduce.errors import SrvError
from reproduce.training.config import resolve_config

runner = CliRunner()

TINY_JPEG = ["--img-size", "16", "--batch-size", "8", "--epochs", "1", "--warmup-epochs", "0",
             "--set", "num_workers=0", "--set", "amp=off", "--set", "aug_repeats=0",
             "--no-progress"]


def test_the_data_path_is_not_part_of_the_identity() -> None:
    a = resolve_config("vit-mini-conv", "deit", {"data_path": "/datasets/imagenet"})
    b = resolve_config("vit-mini-conv", "deit", {"data_path": "/local/scratch/imagenet"})
    assert a.hash == b.hash
    assert resolve_config("vit-mini-conv", "deit", {"seed": 1}).hash != a.hash


def test_engine_settings_and_defaults_do_not_rename_runs() -> None:
    a = resolve_config("vit-mini-conv", "mini")
    for key, value in (("sync_every", 7), ("update_ratio_every", 3), ("num_workers", 4),
                       ("device", "cpu")):
        assert resolve_config("vit-mini-conv", "mini", {key: value}).hash == a.hash, key
    # a key set to its default is the same run as the key left out
    assert resolve_config("vit-mini-conv", "mini", {"spike_factor": 2.0}).hash == a.hash
    assert "spike_factor" not in a.identity() and a.identity()["epochs"] == 15


@pytest.mark.parametrize("key, value", [("aa", "rand-m9-mstd0.5-inc1"), ("reprob", 0.25),
                                        ("hflip", 0.5), ("interpolation", "bicubic"),
                                        ("pca_std", 0.1)])
def test_transform_keys_set_on_in_memory_data_are_refused(key: str, value: object) -> None:
    with pytest.raises(SrvError, match=f"{key}=.* has no effect on the digits data set"):
        resolve_config("vit-mini-conv", "mini", {key: value})
    result = runner.invoke(app(), ["train", "vit-mini-conv", "--set", f"{key}={value}",
                                   "--dry-run"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1


def test_transform_keys_from_a_recipe_file_are_reset_with_a_note() -> None:
    cfg = resolve_config("vit-mini-conv", "deit", {"dataset": "digits", "img_size": 32})
    assert cfg.recipe.aa == "" and cfg.recipe.reprob == 0.0 and cfg.recipe.hflip == 0.0
    assert cfg.recipe.mixup == 0.8  # Mixup acts on batches: it stays
    (note,) = cfg.notes
    assert "aa" in note and "reprob" in note and "reset to neutral values" in note
    # so the DeiT recipe on digits with or without RandAugment in its file is one run
    plain = resolve_config("vit-mini-conv", "deit", {"dataset": "digits", "img_size": 32})
    assert plain.hash == cfg.hash


def test_a_grid_axis_over_an_inert_key_fails_at_dry_run(tmp_path: Path) -> None:
    grid = tmp_path / "aa.toml"
    grid.write_text('title = "aa on digits"\ndefault_preset = "mini"\n'
                    '[axes.aa]\nkey = "aa"\nvalues = ["", "rand-m9-mstd0.5-inc1"]\n'
                    '[presets.mini]\nrecipe = "mini"\nscale = "mini"\nseeds = [0]\n'
                    'model = "vit-mini-conv"\n')
    result = runner.invoke(app(), ["ablate", str(grid), "--dry-run", "--runs-dir",
                                   str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "has no effect on the digits data set" in result.stderr


def app():  # the CLI, imported lazily like the console script
    from reproduce.cli import app as cli

    return cli


def test_moved_data_keeps_the_run_and_other_data_is_refused(tmp_path: Path) -> None:
    spec = JpegFolderSpec(classes=3, train_per_class=8, val_per_class=2, sizes=((24, 20),))
    data = write_jpeg_folder(tmp_path / "a", spec)
    runs = tmp_path / "runs"
    args = ["train", "vit-mini-conv", "--recipe", "deit", "--runs-dir", str(runs), *TINY_JPEG]
    first = runner.invoke(app(), [*args, "--data", str(data)])
    assert first.exit_code == 0, first.output
    (run,) = runs.iterdir()
    # moved: the same run, found finished (nothing retrained)
    moved = tmp_path / "b" / "imagenet"
    shutil.move(str(data), moved)
    again = runner.invoke(app(), [*args, "--data", str(moved)])
    assert again.exit_code == 0 and "training" not in again.output
    assert [p.name for p in runs.iterdir()] == [run.name]
    # really another data set (a class more) under the same run: refused, nothing lost
    (run / "result.json").unlink()  # as if the run were unfinished
    write_jpeg_folder(tmp_path / "c", JpegFolderSpec(classes=4, train_per_class=8,
                                                     val_per_class=2, sizes=((24, 20),)))
    other = runner.invoke(app(), [*args, "--data", str(tmp_path / "c")])
    assert other.exit_code == 2, other.output
    line = other.stderr.strip()
    assert line.startswith("srv: error: ") and "another data set" in line
    assert "num_classes 3 -> 4" in line and "--name" in line
    assert (run / "last.pt").exists() and (run / "metrics.jsonl").exists()

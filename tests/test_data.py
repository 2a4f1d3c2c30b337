"""Data: digits split, ImageNet-layout checks, and the DeiT augmentation on real JPEG folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.data.datasets import build_datasets, check_imagefolder, digits_tensors
from reproduce.errors import SrvError
from reproduce.recipes.recipe import Recipe

runner = CliRunner()


def _write_jpegs(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 255, size=(40 + i % 7, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.JPEG", quality=85)


@pytest.fixture
def imagenet_like(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    for c, cls in enumerate(["n01440764", "n01443537", "n01484850"]):
        _write_jpegs(root / "train" / cls, 12, seed=c)
        _write_jpegs(root / "val" / cls, 3, seed=10 + c)
    return root


def test_digits_split_is_fixed() -> None:
    xt, yt, xv, yv = digits_tensors(32)
    assert xt.shape == (1437, 3, 32, 32) and xv.shape == (360, 3, 32, 32)
    assert sorted(set(yv.tolist())) == list(range(10))
    again = digits_tensors(32)
    assert (again[3] == yv).all() and (again[2] == xv).all()
    assert -1.0 <= float(xt.min()) and float(xt.max()) <= 1.0


def test_imagefolder_layout_is_accepted(imagenet_like: Path) -> None:
    assert check_imagefolder(imagenet_like) == ["n01440764", "n01443537", "n01484850"]


def test_flat_val_folder_is_caught_with_the_fix(imagenet_like: Path) -> None:
    cls = imagenet_like / "val" / "n01440764"
    for img in cls.iterdir():
        img.rename(imagenet_like / "val" / img.name)
    with pytest.raises(SrvError, match="directly instead of one folder per class.*move each"):
        check_imagefolder(imagenet_like)


def test_mismatched_and_empty_classes_are_caught(imagenet_like: Path) -> None:
    (imagenet_like / "val" / "n01484850").rename(imagenet_like / "val" / "n99999999")
    with pytest.raises(SrvError, match="class folders of train/ and val/ differ"):
        check_imagefolder(imagenet_like)
    (imagenet_like / "val" / "n99999999").rename(imagenet_like / "val" / "n01484850")
    for img in (imagenet_like / "train" / "n01443537").iterdir():
        img.unlink()
    with pytest.raises(SrvError, match="n01443537 has no images"):
        check_imagefolder(imagenet_like)


def test_missing_data_is_one_line_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "vit-mini-conv", "--dataset", "imagefolder",
                                 "--data", str(tmp_path), "--runs-dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"srv: error: {tmp_path} has no train/ folder: the layout "
                                     f"is {tmp_path}/train/<class>/*.jpg and {tmp_path}/val/"
                                     f"<class>/*.jpg")


@pytest.mark.parametrize("command", [
    ["train", "vit-mini-conv", "--dry-run"],
    ["train", "vit-mini-conv", "--epochs", "1", "--warmup-epochs", "0", "--set",
     "train_subset=128"],
    ["ablate", "stem", "--dry-run", "--backend", "slurm"],
    ["ablate", "stem", "--preset", "quick", "--dry-run"],
])
@pytest.mark.parametrize("exists", [True, False])
def test_a_data_folder_the_recipe_never_reads_is_refused(command: list[str], exists: bool,
                                                         tmp_path: Path) -> None:
    """--data on a digits recipe (train's default, ablate's mini and quick presets) would be
    recorded and ignored: one line naming --preset full / --dataset imagefolder, exit 2."""
    data = tmp_path if exists else tmp_path / "nonexistent"
    result = runner.invoke(app, [*command, "--data", str(data), "--runs-dir",
                                 str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"srv: error: --data {data}") and "digits" in line
    assert "--preset full" in line and "--dataset imagefolder" in line
    assert ("does not exist" in line) is not exists
    assert not (tmp_path / "runs").exists()


def test_deit_augmentation_trains_on_jpegs(imagenet_like: Path, tmp_path: Path) -> None:
    """The DeiT recipe's whole pipeline (RandAugment, erasing, mixup/cutmix, soft targets)
    on a real JPEG folder, at a small image size."""
    sets = build_datasets(Recipe(dataset="imagefolder", data_path=str(imagenet_like),
                                 img_size=32, aa="rand-m9-mstd0.5-inc1", reprob=0.25))
    x, y, bad = sets.train[0]
    assert tuple(x.shape) == (3, 32, 32) and sets.num_classes == 3 and bad == -1
    assert "resize 36 (bicubic), centre crop 32" == sets.eval_transform
    runs = tmp_path / "runs"
    result = runner.invoke(app, [
        "train", "vit-mini-conv", "--recipe", "deit", "--data", str(imagenet_like),
        "--img-size", "32", "--batch-size", "8", "--epochs", "1", "--warmup-epochs", "0",
        "--set", "num_workers=0", "--set", "amp=off", "--runs-dir", str(runs), "--no-progress"])
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    res = json.loads((run / "result.json").read_text())
    assert res["n_val"] == 9 and res["recipe"] == "deit"
    env = json.loads((run / "env.json").read_text())
    assert env["eval_transform"] == "resize 36 (bicubic), centre crop 32"
    assert "aug_repeats=3 acts only under DDP" in result.output


@pytest.mark.parametrize(("dataset", "mean"), [("cifar10", (0.4914, 0.4822, 0.4465)),
                                               ("imagefolder", (0.485, 0.456, 0.406))])
def test_the_dry_run_normalises_as_the_data_set_does(dataset: str, mean: tuple) -> None:
    """build_parts (srv train --dry-run, the fidelity checks) and build_datasets share one
    choice of transforms: CIFAR's statistics for CIFAR, ImageNet's for an image folder."""
    from reproduce.training.builders import build_parts
    from reproduce.training.config import resolve_config

    parts = build_parts(resolve_config("vit-mini-conv", "mini", {"dataset": dataset}),
                        device="meta")
    normalize = parts.eval_tf.transforms[-1]
    assert tuple(round(float(m), 4) for m in normalize.mean) == mean

"""Fashion-MNIST (issue 28's regime scale): the four IDX files, plain or gzipped, in a folder or in
torchvision's layout, read by torchvision; padding to 32x32, class-balanced fixed subsets, and the
one-line error without the files. Every test writes its own tiny IDX files: none needs Debian's
dataset-fashion-mnist package."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.data.datasets import build_datasets
from reproduce.data.fashion import FILES, MEAN, STD, balanced_subset, find_files, read_idx
from reproduce.errors import SrvError
from reproduce.recipes.recipe import Recipe

runner = CliRunner()


def write_idx(folder: Path, n_train: int = 120, n_test: int = 40, gz: bool = True,
              seed: int = 0) -> Path:
    """The four Fashion-MNIST files with random 28x28 images and balanced labels 0-9."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        blobs = {f"{split}-images-idx3-ubyte": struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28)
                 + images.tobytes(),
                 f"{split}-labels-idx1-ubyte": struct.pack(">BBBBI", 0, 0, 8, 1, n)
                 + labels.tobytes()}
        for name, blob in blobs.items():
            if gz:
                with gzip.open(folder / f"{name}.gz", "wb") as f:
                    f.write(blob)
            else:
                (folder / name).write_bytes(blob)
    return folder


@pytest.fixture
def idx_gz(tmp_path: Path) -> Path:
    return write_idx(tmp_path / "fmnist-gz")


def test_plain_gzipped_and_torchvision_layouts_read_the_same(idx_gz: Path, tmp_path: Path
                                                             ) -> None:
    plain = write_idx(tmp_path / "plain", gz=False)
    layout = write_idx(tmp_path / "tv" / "FashionMNIST" / "raw", gz=False).parent.parent
    first = read_idx(idx_gz)
    assert first[0].shape == (120, 28, 28) and first[0].dtype == torch.uint8
    assert first[3].shape == (40,) and first[4][0] == "T-shirt/top" and len(first[4]) == 10
    for other in (plain, layout):
        again = read_idx(other)
        assert all(torch.equal(a, b) for a, b in zip(first[:4], again[:4], strict=True))
    assert find_files(layout)[FILES[0]].parent.name == "raw"


def test_images_are_padded_to_32_and_normalised(idx_gz: Path) -> None:
    xt, _, xv, yv, _ = read_idx(idx_gz)
    sets = build_datasets(Recipe(dataset="fashion-mnist", data_path=str(idx_gz), img_size=32))
    x, _ = sets.train[0]
    assert tuple(x.shape) == (3, 32, 32) and sets.num_classes == 10
    assert len(sets.train) == 120 and len(sets.val) == 40
    # 2 pixels of background a side, the image itself unchanged inside
    assert torch.allclose(x[:, :2], torch.tensor(-MEAN / STD))
    assert torch.allclose(x[0, 2:30, 2:30], (xt[0].float() / 255 - MEAN) / STD)
    assert torch.equal(x[0], x[2])
    assert sets.fingerprint["dataset"] == "fashion-mnist" and sets.fingerprint["val_images"] == 40
    assert "padded to 32" in sets.eval_transform
    assert tuple(build_datasets(Recipe(dataset="fashion-mnist", data_path=str(idx_gz),
                                       img_size=16)).val[0][0].shape) == (3, 16, 16)


def test_subsets_are_class_balanced_fixed_and_nested() -> None:
    labels = torch.tensor([i % 10 for i in range(1000)])
    small, large = balanced_subset(labels, 100), balanced_subset(labels, 205)
    assert torch.bincount(labels[small]).tolist() == [10] * 10
    assert torch.bincount(labels[large]).tolist() == [21] * 5 + [20] * 5
    assert set(small.tolist()) <= set(large.tolist())
    assert torch.equal(small, balanced_subset(labels, 100)) and torch.equal(small, small.sort()[0])
    assert not torch.equal(small, balanced_subset(labels, 100, seed=1))
    assert len(balanced_subset(labels, 0)) == 1000 == len(balanced_subset(labels, 5000))


def test_the_recipe_subsets_and_the_validation_floor(idx_gz: Path, tmp_path: Path) -> None:
    big = write_idx(tmp_path / "big", n_train=60, n_test=1200)
    sets = build_datasets(Recipe(dataset="fashion-mnist", data_path=str(big), img_size=32,
                                 train_subset=30, val_subset=1000))
    assert len(sets.train) == 30 and len(sets.val) == 1000
    assert torch.bincount(sets.val.tensors[1]).tolist() == [100] * 10
    with pytest.raises(SrvError, match="at least 1,000 images"):
        build_datasets(Recipe(dataset="fashion-mnist", data_path=str(idx_gz), val_subset=500))


def _one_error_line(result: object) -> str:
    stderr = result.stderr.strip()  # type: ignore[attr-defined]
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    assert len(stderr.splitlines()) == 1
    return stderr


def test_missing_files_are_one_line_exit_2_before_training(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["train", "vit-mini-patch", "--recipe", "mini", "--dataset", "fashion-mnist",
            "--data", str(empty), "--runs-dir", str(tmp_path / "runs")]
    for extra in (["--dry-run"], []):
        line = _one_error_line(runner.invoke(app, [*base, *extra]))
        assert line.startswith(f"srv: error: no Fashion-MNIST at {empty}: ")
        assert all(name in line for name in FILES)
        assert "dataset-fashion-mnist" in line and "--data DIR" in line
    assert not list((tmp_path / "runs").glob("*/metrics.jsonl"))
    half = write_idx(tmp_path / "half")
    (half / f"{FILES[3]}.gz").unlink()
    assert "no Fashion-MNIST at" in _one_error_line(runner.invoke(
        app, [*base[:-4], "--data", str(half), "--runs-dir", str(tmp_path / "r"), "--dry-run"]))
    broken = write_idx(tmp_path / "broken")
    (broken / f"{FILES[0]}.gz").write_bytes(b"not gzip")
    assert "not readable IDX files" in _one_error_line(runner.invoke(
        app, [*base[:-4], "--data", str(broken), "--runs-dir", str(tmp_path / "r2")]))


def test_one_epoch_trains_on_the_idx_files(idx_gz: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = runner.invoke(app, [
        "train", "vit-mini-patch", "--recipe", "mini", "--dataset", "fashion-mnist", "--data",
        str(idx_gz), "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "40",
        "--runs-dir", str(runs), "--no-progress", "--log", "none"])
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    res = json.loads((run / "result.json").read_text())
    assert res["n_val"] == 40 and res["steps"] == 3
    config = json.loads((run / "config.json").read_text())
    assert config["data"]["dataset"] == "fashion-mnist" and config["data"]["train_images"] == 120
    assert json.loads((run / "env.json").read_text())["eval_transform"] == "28x28 padded to 32"

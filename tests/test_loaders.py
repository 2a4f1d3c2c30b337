"""The input-pipeline seam: per-sample seeds, worker independence, bad files, DALI in the engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reproduce.data.datasets import build_datasets
from reproduce.data.jpeg_folder import JpegFolderSpec, write_jpeg_folder
from reproduce.data.torch_loaders import TorchTrainLoader, TorchValLoader, sample_seeds
from reproduce.recipes.recipe import Recipe
from reproduce.training.config import resolve_config
from reproduce.training.engine import train
from reproduce.utils.distributed import DistInfo


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jpeg_folder(tmp_path_factory.mktemp("jpegs"), JpegFolderSpec(
        classes=3, train_per_class=16, val_per_class=3, sizes=((40, 30), (30, 40), (48, 48))))


def _deit(folder: Path, **extra: object) -> Recipe:
    return Recipe(dataset="imagefolder", data_path=str(folder), img_size=16, batch_size=8,
                  aa="rand-m9-mstd0.5-inc1", reprob=0.25, **extra)  # type: ignore[arg-type]


def _epoch(loader: TorchTrainLoader, epoch: int) -> list[torch.Tensor]:
    loader.set_epoch(epoch)
    return [x for x, _ in loader]


def test_sample_seeds_are_a_function_of_seed_epoch_rank_position() -> None:
    a = sample_seeds(0, 3, 1, 10)
    assert (a == sample_seeds(0, 3, 1, 10)).all() and (a[:4] == sample_seeds(0, 3, 1, 4)).all()
    for other in (sample_seeds(1, 3, 1, 10), sample_seeds(0, 4, 1, 10), sample_seeds(0, 3, 0, 10)):
        assert not (a == other).all()


def test_augmentation_does_not_depend_on_workers_or_on_what_ran_before(folder: Path) -> None:
    """The DeiT transform's draws are the same with 0 or 2 workers, and epoch 2 is the same
    whether epoch 1 ran first (an uninterrupted run) or not (a resumed one)."""
    info = DistInfo()
    r0, r2 = _deit(folder, num_workers=0), _deit(folder, num_workers=2)
    ref = TorchTrainLoader(build_datasets(r0).train, r0, info)  # type: ignore[arg-type]
    run_through = [_epoch(ref, 1), _epoch(ref, 2)]
    torch.manual_seed(123)  # whatever the main process did before must not matter
    resumed = TorchTrainLoader(build_datasets(r2).train, r2, info)  # type: ignore[arg-type]
    epoch2 = _epoch(resumed, 2)
    assert len(epoch2) == len(run_through[1]) == 48 // 8
    assert all(torch.equal(a, b) for a, b in zip(run_through[1], epoch2, strict=True))
    assert not torch.equal(run_through[0][0], run_through[1][0])  # epochs differ


def test_the_main_process_random_stream_is_untouched_by_loading(folder: Path) -> None:
    r = _deit(folder, num_workers=0)
    loader = TorchTrainLoader(build_datasets(r).train, r, DistInfo())  # type: ignore[arg-type]
    torch.manual_seed(7)
    want = torch.rand(3)
    torch.manual_seed(7)
    _epoch(loader, 1)
    assert torch.equal(torch.rand(3), want)


def test_unreadable_val_images_are_left_out_of_the_counts(folder: Path, tmp_path: Path) -> None:
    import shutil

    copy = Path(shutil.copytree(folder, tmp_path / "copy"))
    (copy / "val" / "n00000001" / "val_1_00000.JPEG").write_bytes(b"not a jpeg")
    r = _deit(copy, num_workers=0)
    sets = build_datasets(r)
    loader = TorchValLoader(sets.val, r, DistInfo())
    n = sum(len(y) for _, y in loader)
    assert n == 8 and len(loader.bad_indices) == 1


def test_the_engine_trains_on_the_dali_pipeline(folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("nvidia.dali")
    cfg = resolve_config("vit-mini-conv", "deit", {
        "data_path": str(folder), "img_size": 16, "batch_size": 8, "epochs": 1,
        "warmup_epochs": 0.0, "loader": "dali", "num_workers": 1, "amp": "off"})
    outcome = train(cfg, tmp_path / "runs", progress=False)
    assert outcome.status == "completed", outcome.reason
    row = json.loads((outcome.run_dir / "metrics.jsonl").read_text())
    assert row["n_val"] == 9 and row["step"] == 48 // 8


def test_the_dali_pipeline_substitutes_unreadable_files_found_up_front(
        folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """DALI cannot skip a corrupt JPEG inside its pipeline (its CPU decoder even crashes the
    process), so the folder is decoded once up front and unreadable files get a stand-in."""
    pytest.importorskip("nvidia.dali")
    import shutil

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    data = Path(shutil.copytree(folder, tmp_path / "data"))
    cut = data / "train" / "n00000002" / "train_2_00003.JPEG"
    cut.write_bytes(cut.read_bytes()[:300])
    (data / "val" / "n00000001" / "val_1_00000.JPEG").write_text("<html>404</html>")
    cfg = resolve_config("vit-mini-conv", "deit", {
        "data_path": str(data), "img_size": 16, "batch_size": 8, "epochs": 1,
        "warmup_epochs": 0.0, "loader": "dali", "num_workers": 1, "amp": "off"})
    outcome = train(cfg, tmp_path / "runs", progress=False)
    assert outcome.status == "completed", outcome.reason
    result = outcome.result or {}
    assert result["n_val"] == 8  # the unreadable val image is not counted
    assert sorted(Path(f).name for f in result["bad_files"]) == [
        "train_2_00003.JPEG", "val_1_00000.JPEG"]
    assert list((tmp_path / "cache" / "srv" / "image-checks").glob("*.json"))  # checked once

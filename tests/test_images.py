"""Bad files in an image folder: skipped with a warning text, substituted deterministically,
reported per item, through DataLoader workers; a broken folder is one clear error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from PIL import ImageFile
from torch.utils.data import DataLoader, Subset

from reproduce.data.datasets import build_datasets
from reproduce.data.images import TolerantImageFolder, describe_bad, image_folder_of
from reproduce.data.jpeg_folder import JpegFolderSpec, write_jpeg_folder
from reproduce.errors import SrvError
from reproduce.recipes.recipe import load_recipe

SPEC = JpegFolderSpec(classes=3, train_per_class=8, val_per_class=4,
                      sizes=((40, 30), (30, 40), (36, 36)))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, set[str]]]:
    """Real JPEGs with, among them: truncated files, a garbage file, an empty file, an HTML
    page saved as .JPEG; two bad files in a row, and a bad file last (the substitute wraps)."""
    root = write_jpeg_folder(tmp_path_factory.mktemp("damaged"), SPEC)
    train = sorted((root / "train").rglob("*.JPEG"))
    val = sorted((root / "val").rglob("*.JPEG"))
    _truncate(train[3])
    train[4].write_bytes(torch.randint(0, 256, (3000,), dtype=torch.uint8,
                                       generator=torch.Generator().manual_seed(0)).numpy()
                         .tobytes())
    train[10].write_bytes(b"")
    _truncate(train[-1])
    val[5].write_text("<html><body>404 Not Found</body></html>")
    _truncate(val[-1])
    bad = {"train": {str(p) for p in (train[3], train[4], train[10], train[-1])},
           "val": {str(p) for p in (val[5], val[-1])}}
    return root, bad


def _recipe(root: Path) -> object:
    return dataclasses.replace(load_recipe("deit")[0], data_path=str(root), img_size=16,
                               num_workers=2)


def test_bad_files_are_skipped_substituted_and_reported_through_workers(
        damaged: tuple[Path, dict[str, set[str]]]) -> None:
    root, bad = damaged
    sets = build_datasets(_recipe(root))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # a truncated file is a bad file
    for split, ds in (("train", sets.train), ("val", sets.val)):
        folder = image_folder_of(ds)
        assert isinstance(folder, TolerantImageFolder)
        seen: list[int] = []
        n_items = 0
        torch.manual_seed(0)
        for x, y, flags in DataLoader(ds, batch_size=5, num_workers=2, shuffle=True):
            assert x.shape[1:] == (3, 16, 16) and torch.isfinite(x).all()
            assert len(y) == len(flags)
            n_items += len(y)
            seen += [int(f) for f in flags if f >= 0]
        assert n_items == len(ds)  # nothing dropped: every index gives a sample
        assert len(seen) == len(set(seen))  # each bad file reported once per pass
        assert {folder.path_of(i) for i in seen} == bad[split]
        for i in seen:
            text = describe_bad(ds, i)
            assert folder.path_of(i) in text and "skipped" in text and "\n" not in text


def test_the_substitute_is_the_next_readable_sample(
        damaged: tuple[Path, dict[str, set[str]]]) -> None:
    root, bad = damaged
    val = build_datasets(_recipe(root), train=False).val  # eval transform: deterministic
    paths = [p for p, _ in val.samples]
    first_bad = paths.index(sorted(bad["val"])[0])
    x, y, flag = val[first_bad]
    x_next, y_next, flag_next = val[first_bad + 1]
    assert flag == first_bad and flag_next == -1
    assert torch.equal(x, x_next) and y == y_next
    last = len(paths) - 1  # the last file is bad: the substitute wraps to the first
    x_last, y_last, flag_last = val[last]
    assert flag_last == last and torch.equal(x_last, val[0][0]) and y_last == val[0][1]
    assert val[first_bad][2] == first_bad  # the same answer every time


def test_reason_names_the_damage(damaged: tuple[Path, dict[str, set[str]]]) -> None:
    root, bad = damaged
    train = build_datasets(_recipe(root)).train
    paths = [p for p, _ in train.samples]
    first_bad = paths.index(sorted(bad["train"])[0])
    text = describe_bad(train, first_bad)
    assert "truncated" in text or "not an image" in text, text
    # a train_subset / val_subset wraps the folder: `bad` still indexes the folder's files
    subset = Subset(train, [first_bad, 0])
    assert image_folder_of(subset) is train and subset[0][2] == first_bad
    assert describe_bad(subset, first_bad) == text


def test_a_broken_folder_is_one_clear_error(tmp_path: Path) -> None:
    root = write_jpeg_folder(tmp_path, JpegFolderSpec(classes=2, train_per_class=3,
                                                      val_per_class=1, sizes=((20, 20),)))
    for path in (root / "train").rglob("*.JPEG"):
        path.write_bytes(b"not an image")
    train = build_datasets(_recipe(root)).train
    with pytest.raises(SrvError, match="unreadable images in a row"):
        train[0]

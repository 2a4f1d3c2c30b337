"""The recipe's input pipeline: the timm loaders (:mod:`.loaders`) or DALI's (:mod:`.dali`),
chosen by ``loader = "timm" | "dali"``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from reproduce.data import dali
from reproduce.data.loaders import TorchTrainLoader, TorchValLoader
from reproduce.errors import SrvError
from reproduce.recipes.recipe import IN_MEMORY_DATASETS, Recipe
from reproduce.utils.distributed import DistInfo

__all__ = ["build_train_loader", "build_val_loader"]


def _dali_root(r: Recipe) -> Path:
    """The image folder DALI reads, once the recipe and the installed packages allow it."""
    if r.dataset != "imagefolder":
        raise SrvError(f"loader = 'dali' reads image folders; the {r.dataset} data set needs "
                       f"--set loader=timm")
    dali.require()
    return Path(r.data_path).expanduser()


def build_train_loader(dataset: Dataset | None, r: Recipe, info: DistInfo) -> Any:
    """The recipe's training pipeline (``loader = timm | dali``)."""
    if r.loader == "dali":
        return dali.build_train_loader(_dali_root(r), r, info)
    assert dataset is not None
    # in-memory tensors (digits, fashion-mnist, synthetic) have no random transform: nothing
    # to seed
    seeded = r.dataset not in IN_MEMORY_DATASETS
    return TorchTrainLoader(dataset, r, info, seeded=seeded)


def build_val_loader(dataset: Dataset, r: Recipe, info: DistInfo) -> Any:
    """The recipe's evaluation pipeline: every val image once over all ranks."""
    if r.loader == "dali":
        return dali.build_val_loader(_dali_root(r), r, info)
    return TorchValLoader(dataset, r, info)

"""The recipe's input pipeline: the timm loaders (:mod:`.torch_loaders`) or DALI's (:mod:`.dali`),
chosen by ``loader = "timm" | "dali"``, behind one typed interface (:class:`TrainLoader`,
:class:`EvalLoader`) the engine relies on.

May import: :mod:`reproduce.data`, :mod:`reproduce.recipes`, :mod:`reproduce.utils`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch
from torch.utils.data import Dataset

from reproduce.data import dali
from reproduce.data.torch_loaders import TorchTrainLoader, TorchValLoader
from reproduce.errors import SrvError
from reproduce.recipes.recipe import IN_MEMORY_DATASETS, Recipe
from reproduce.utils.distributed import DistInfo

__all__ = ["EvalLoader", "TrainLoader", "build_train_loader", "build_val_loader"]


class EvalLoader(Protocol):
    """An input pipeline as the engine uses it: ``(x, y)`` batches on the device; the indices
    of unreadable images met (a stand-in was read instead) collect in :attr:`bad_indices`."""

    bad_indices: list[int]

    def __len__(self) -> int:  # batches per pass on this rank
        ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        ...

    def path_of(self, index: int) -> str:  # the file of sample ``index``
        ...

    def describe_bad(self, index: int) -> str:  # the warning line for an unreadable sample
        ...


class TrainLoader(EvalLoader, Protocol):
    """A training pipeline: one epoch per ``iter()``, after ``set_epoch``; its length is the
    optimizer steps per epoch on this rank."""

    def set_epoch(self, epoch: int) -> None:  # 1-based epoch about to run
        ...


def _dali_root(r: Recipe) -> Path:
    """The image folder DALI reads, once the recipe and the installed packages allow it."""
    if r.dataset != "imagefolder":
        raise SrvError(f"loader = 'dali' reads image folders; the {r.dataset} data set needs "
                       f"--set loader=timm")
    dali.require()
    return Path(r.data_path).expanduser()


def build_train_loader(dataset: Dataset | None, r: Recipe, info: DistInfo) -> TrainLoader:
    """The recipe's training pipeline (``loader = timm | dali``)."""
    if r.loader == "dali":
        return dali.build_train_loader(_dali_root(r), r, info)
    assert dataset is not None
    # in-memory tensors (digits, fashion-mnist, synthetic) have no random transform: nothing
    # to seed
    seeded = r.dataset not in IN_MEMORY_DATASETS
    return TorchTrainLoader(dataset, r, info, seeded=seeded)


def build_val_loader(dataset: Dataset, r: Recipe, info: DistInfo) -> EvalLoader:
    """The recipe's evaluation pipeline: every val image once over all ranks."""
    if r.loader == "dali":
        return dali.build_val_loader(_dali_root(r), r, info)
    return TorchValLoader(dataset, r, info)

"""Input pipelines behind one small interface: batches of (images, targets) on the device.

The engine asks a train loader (:class:`reproduce.data.build.TrainLoader`) for
``set_epoch(e)`` and then iterates ``(x, y)`` batches already on its device, augmented except
for Mixup/CutMix (the engine applies timm's ``Mixup`` to every pipeline's batches). Two
pipelines implement it:

* ``timm`` (default, :class:`TorchTrainLoader`): torch's ``DataLoader`` over a data set with
  timm's transforms, loader workers, pinned memory.
* ``dali`` (:mod:`reproduce.data.dali`): NVIDIA DALI, decode and augmentation on the GPU.

Both take their sample order from :mod:`.sampling` (timm's samplers for seed, epoch and
rank). For exact resume the timm path also makes every sample's augmentation a function of
(seed, epoch, rank, position in the epoch): each item is drawn with its own seed
(:class:`SeededSampler`), so the draws do not depend on which worker loads it, on whether
workers persist across epochs, or on where a run was interrupted.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from reproduce.data.sampling import shard_indices, train_sampler
from reproduce.errors import SrvError
from reproduce.recipes.recipe import Recipe
from reproduce.utils.distributed import DistInfo

__all__ = ["TorchTrainLoader", "TorchValLoader", "SeededSampler", "SeededDataset", "sample_seeds"]


def sample_seeds(seed: int, epoch: int, rank: int, n: int) -> np.ndarray:
    """Per-position seeds of one rank's epoch: ``n`` 32-bit values from numpy's SeedSequence
    of (seed, epoch, rank), so position ``p`` always gets the same seed."""
    return np.random.SeedSequence([seed, epoch, rank]).generate_state(max(n, 1))[:n]


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)``: the wrapped sampler's indices, each with the seed of its
    position in this rank's epoch (:func:`sample_seeds`)."""

    def __init__(self, sampler: Sampler[int], seed: int, rank: int) -> None:
        self.sampler, self.seed, self.rank = sampler, seed, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)  # type: ignore[attr-defined]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(self.sampler)
        seeds = sample_seeds(self.seed, self.epoch, self.rank, len(indices))
        return iter(zip(indices, (int(s) for s in seeds), strict=True))

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]


class SeededDataset(Dataset):
    """Draws item ``index`` with every random generator (Python, numpy, torch) seeded by the
    sampler's ``sample_seed``. In the main process (``num_workers = 0``) the training loop's own
    generator states are saved and restored around the draw, so dropout, drop path and Mixup
    see the same random stream with or without workers."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        if torch.utils.data.get_worker_info() is not None:
            _seed_generators(seed)
            return self.base[index]
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            _seed_generators(seed)
            item = self.base[index]
        random.setstate(py_state)
        np.random.set_state(np_state)
        return item


def _seed_generators(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_train_size(n: int, r: Recipe) -> None:
    """A training set must fill one global batch (every pipeline drops the last partial one)."""
    if n < r.batch_size:
        raise SrvError(f"the training set has {n} images, fewer than one global batch of "
                       f"{r.batch_size}: lower --batch-size")


def _to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


def _one_line_errors(loader: DataLoader) -> Iterator[Any]:
    """Iterate ``loader``; a user error raised in a loader worker (e.g. a folder of unreadable
    files) reaches the user as its own one line, without the worker's traceback that torch
    wraps around it."""
    try:
        yield from loader
    except SrvError as err:
        lines = [line for line in str(err).splitlines() if line.strip()]
        raise SrvError(lines[-1].removeprefix("reproduce.errors.SrvError: ")) from None


def _bad_of(batch: Any) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """``(x, y)`` and the indices of unreadable files replaced in this batch (items of
    :class:`reproduce.data.images.TolerantImageFolder` carry them as a third element)."""
    x, y, *rest = batch
    if not rest or not bool((rest[0] >= 0).any()):
        return x, y, []
    bad = rest[0]
    return x, y, bad[bad >= 0].tolist()


class _NamesBadFiles:
    """What the engine asks of a loader about the unreadable files it met (the DALI loaders
    answer the same two questions)."""

    source: Dataset  # what the ``bad`` indices of its items index

    def path_of(self, index: int) -> str:
        """The file of sample ``index`` (as ``bad_indices`` reports it)."""
        from reproduce.data.images import image_folder_of

        folder = image_folder_of(self.source)
        return folder.path_of(index) if folder is not None else f"item {index}"

    def describe_bad(self, index: int) -> str:
        """The one-line warning for the unreadable file ``index``."""
        from reproduce.data.images import describe_bad

        return describe_bad(self.source, index)


class TorchTrainLoader(_NamesBadFiles):
    """timm's path: a ``DataLoader`` with per-sample seeds, workers and pinned memory.

    Items may be ``(x, y)`` or ``(x, y, bad)`` where ``bad`` is -1 or the index of an unreadable
    file that was replaced (:class:`reproduce.data.images.TolerantImageFolder`); those indices of
    :attr:`source` collect in :attr:`bad_indices` for the engine to report.
    """

    def __init__(self, dataset: Dataset, r: Recipe, info: DistInfo, seeded: bool = True) -> None:
        n = len(dataset)  # type: ignore[arg-type]
        check_train_size(n, r)
        self.info, self.channels_last = info, r.channels_last
        self.source = dataset  # what the ``bad`` indices of its items index
        self.sampler: Any = train_sampler(n, r.seed, info.rank, info.world_size, r.aug_repeats)
        if seeded:
            self.sampler = SeededSampler(self.sampler, r.seed, info.rank)
            dataset = SeededDataset(dataset)
        self.dataset = dataset
        # the loader's own generator: creating its iterator must not draw from the global RNG
        self.loader = DataLoader(
            dataset, batch_size=r.batch_size // info.world_size, sampler=self.sampler,
            drop_last=True, num_workers=r.num_workers, pin_memory=info.device.type == "cuda",
            persistent_workers=r.num_workers > 0, generator=torch.Generator().manual_seed(r.seed))
        self.bad_indices: list[int] = []

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in _one_line_errors(self.loader):
            x, y, bad = _bad_of(batch)
            self.bad_indices += bad  # a replacement image stands in: the batch keeps its size
            yield _to_device(x, y, self.info.device, self.channels_last)


class _ShardSampler(Sampler[int]):
    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = shard_indices(n, rank, world)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class TorchValLoader(_NamesBadFiles):
    """Val images sharded over ranks without padding (each image counted exactly once).

    An unreadable val image is left out of the batch (and so of the counts: ``n`` is the number
    of readable images) and its index collected in :attr:`bad_indices`."""

    def __init__(self, dataset: Dataset, r: Recipe, info: DistInfo) -> None:
        self.info, self.source = info, dataset
        self.channels_last = r.channels_last
        self.loader = DataLoader(
            dataset, batch_size=max(r.batch_size // info.world_size, 1),
            sampler=_ShardSampler(len(dataset), info.rank, info.world_size),  # type: ignore[arg-type]
            num_workers=r.num_workers, pin_memory=info.device.type == "cuda",
            persistent_workers=r.num_workers > 0)
        self.bad_indices: list[int] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in _one_line_errors(self.loader):
            x, y, bad = _bad_of(batch)
            if bad:  # evaluation counts readable images only: drop the stand-ins
                self.bad_indices += bad
                keep = batch[2] < 0
                x, y = x[keep], y[keep]
                if not len(y):
                    continue
            yield _to_device(x, y, self.info.device, self.channels_last)

"""Training and evaluation loaders over DALI pipelines: batches of ``(images, targets)`` on the
run's device, with the timm path's sample order, epoch by epoch.

* Order: each epoch, this rank's indices are :func:`reproduce.data.sampling.epoch_indices` (timm's
  ``RepeatAugSampler`` under DDP with ``aug_repeats``, torch's ``DistributedSampler``
  otherwise), cut to whole batches (the timm path's ``drop_last``), written as DALI's file list.
* Determinism: a fresh pipeline per epoch, seeded from (seed, epoch, rank), so an epoch
  restarted after a kill replays the same batches (the engine restarts an interrupted epoch
  from its start); random erasing draws from generators seeded the same way per batch.
* Erasing: timm's ``RandomErasing`` on the normalised batch on the device, after the pipeline,
  as timm's transform order has it. Mixup/CutMix is the engine's, for every loader.
* Evaluation: this rank's shard (:func:`reproduce.data.sampling.shard_indices`), every image once;
  the last batch is partial (DALI's ``LastBatchPolicy.PARTIAL`` over a padded reader).

Without a GPU the same graphs run on DALI's CPU operators (``device_id=None``).
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reproduce.data.dali.files import ImageList, image_list, write_file_list
from reproduce.data.images import skipped_line
from reproduce.data.sampling import epoch_indices, shard_indices, train_sampler
from reproduce.data.torch_loaders import _to_device, check_train_size
from reproduce.errors import SrvError
from reproduce.recipes.recipe import Recipe
from reproduce.utils.distributed import DistInfo

if TYPE_CHECKING:  # the graph modules import DALI: only when a loader runs
    from reproduce.data.dali.pipeline import EvalSpec, TrainSpec

__all__ = ["DaliTrainLoader", "DaliValLoader", "build_train_loader", "build_val_loader",
           "stream_seed"]


def stream_seed(seed: int, epoch: int, rank: int, stream: int = 0) -> int:
    """A 31-bit seed for one random stream of (seed, epoch, rank): 0 the pipeline, 1 + step
    the erasing of a batch."""
    return int(np.random.SeedSequence([seed, epoch, rank, stream]).generate_state(1)[0]
               & 0x7FFFFFFF)


def _list_path(split: str) -> Path:
    """A fresh file for one pipeline's file list (removed when its iteration ends)."""
    fd, name = tempfile.mkstemp(prefix=f"srv-dali-{split}-", suffix=".txt")
    os.close(fd)
    return Path(name)


def _device_id(info: DistInfo) -> int | None:
    """DALI's device: the CUDA device index, or None for the CPU operators."""
    if info.device.type != "cuda":
        return None
    return info.device.index if info.device.index is not None else torch.cuda.current_device()


def _per_device_batch(recipe: Recipe, info: DistInfo) -> int:
    per_device = recipe.batch_size // info.world_size
    if per_device < 1:
        raise SrvError(f"batch_size {recipe.batch_size} is smaller than the world size "
                       f"{info.world_size}: raise --batch-size")
    return per_device


def _mean_std() -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    return tuple(IMAGENET_DEFAULT_MEAN), tuple(IMAGENET_DEFAULT_STD)  # type: ignore[return-value]


def train_spec(recipe: Recipe) -> TrainSpec:
    """The recipe's training transform for DALI (the aa string parsed by timm)."""
    from timm.data.transforms import str_to_pil_interp

    from reproduce.data.dali.pipeline import TrainSpec
    from reproduce.data.dali.policies import parse_policy

    if recipe.color_jitter > 0 and not recipe.aa:
        raise SrvError("color_jitter without aa is not on the DALI loader: use --set "
                       "loader=timm, or --set color_jitter=0")
    mean, std = _mean_std()
    # timm's create_transform: img_mean = tuple(min(255, round(255 * x)) for x in mean)
    r, g, b = (min(255, round(255 * m)) for m in mean)
    interp = str_to_pil_interp(recipe.interpolation)
    policy = parse_policy(recipe.aa, (r, g, b), interp, recipe.img_size) if recipe.aa else None
    return TrainSpec(recipe.img_size, recipe.scale_min, recipe.hflip, recipe.interpolation,
                     mean, std, policy, (r, g, b))


def eval_spec(recipe: Recipe) -> EvalSpec:
    """The recipe's evaluation transform for DALI."""
    from reproduce.data.dali.pipeline import EvalSpec

    mean, std = _mean_std()
    return EvalSpec(recipe.img_size, recipe.crop_pct, recipe.interpolation, mean, std)


class _NamesUnreadable:
    """What the engine asks of a loader about the unreadable files it met."""

    images: ImageList

    def path_of(self, index: int) -> str:
        """The file of sample ``index`` (as ``bad_indices`` reports it)."""
        return self.images.path_of(index)

    def describe_bad(self, index: int) -> str:
        """The one-line warning for the unreadable file ``index``."""
        return skipped_line(self.images.path_of(index), "found by the DALI loader's up-front "
                            "check")


class DaliTrainLoader(_NamesUnreadable):
    """One epoch of training batches per ``iter()``; call :meth:`set_epoch` (1-based) first."""

    def __init__(self, images: ImageList, recipe: Recipe, info: DistInfo, *,
                 prefetch: int = 2, num_threads: int | None = None,
                 hw_decoder_load: float = 0.65) -> None:
        self.images = images
        self.recipe = recipe
        self.info = info
        self.num_classes = len(images.classes)
        self.batch_size = _per_device_batch(recipe, info)
        check_train_size(len(images), recipe)
        per_rank = len(train_sampler(len(images), recipe.seed, info.rank, info.world_size,
                                     recipe.aug_repeats))  # type: ignore[arg-type]
        self.steps = per_rank // self.batch_size
        self.epoch = 1
        self.prefetch = prefetch
        self.num_threads = num_threads if num_threads is not None else recipe.num_workers
        self.hw_decoder_load = hw_decoder_load
        self.spec = train_spec(recipe)
        self.bad_indices: list[int] = []  # unreadable files met (their stand-in was read)
        self.device_id = _device_id(info)
        self._erasing = None
        if recipe.reprob > 0:
            from timm.data.random_erasing import RandomErasing

            self._erasing = RandomErasing(recipe.reprob, mode=recipe.remode,
                                          max_count=recipe.recount, device=str(info.device))

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        """The 1-based epoch the next ``iter()`` runs (the sampler's ``set_epoch``)."""
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        """The data-set indices this rank trains on in ``epoch``, in batch order."""
        r, info = self.recipe, self.info
        indices = epoch_indices(len(self.images), r.seed, epoch, info.rank, info.world_size,
                                r.aug_repeats)
        return indices[: self.steps * self.batch_size]

    def _erase(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """timm's RandomErasing, its Python and torch draws seeded per (epoch, rank, step)."""
        assert self._erasing is not None
        seed = stream_seed(self.recipe.seed, self.epoch, self.info.rank, 1 + step)
        state = random.getstate()
        devices = [x.device] if x.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                random.seed(seed)
                torch.random.default_generator.manual_seed(seed)
                if devices:
                    with torch.cuda.device(x.device):
                        torch.cuda.manual_seed(seed)
                return self._erasing(x)
        finally:
            random.setstate(state)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        from reproduce.data.dali.pipeline import READER, train_pipeline

        if self.steps == 0:
            return
        order = self.order(self.epoch)
        self.bad_indices += [i for i in order if i in self.images.stand_in]
        file_list = write_file_list(_list_path("train"), self.images, order)
        pipe = batches = None
        try:
            pipe = train_pipeline(file_list, self.images.root, self.spec,
                                  batch_size=self.batch_size, num_threads=self.num_threads,
                                  device_id=self.device_id, prefetch=self.prefetch,
                                  hw_decoder_load=self.hw_decoder_load,
                                  seed=stream_seed(self.recipe.seed, self.epoch, self.info.rank))
            batches = DALIGenericIterator(pipe, ["x", "y"], reader_name=READER,
                                          last_batch_policy=LastBatchPolicy.DROP)
            for step, out in enumerate(batches):
                x, y = out[0]["x"], out[0]["y"].reshape(-1).long()
                if self._erasing is not None:
                    x = self._erase(x, step)
                yield _to_device(x, y, self.info.device, self.recipe.channels_last)
        finally:
            batches = pipe = None  # free the pipeline's buffers before the next epoch's
            file_list.unlink(missing_ok=True)


class DaliValLoader(_NamesUnreadable):
    """This rank's shard of the val set, each image once, in ``iter()`` order.

    The pipeline is built on the first ``iter()`` and kept for the run: evaluation reads the
    same files in the same order every time and draws nothing at random, so each evaluation
    after the first starts from a warm pipeline (decoder initialised, prefetch queue filled while
    the model trains) instead of building one. An evaluation stopped part-way drops
    the pipeline (DALI cannot reset mid-epoch); the next one builds it again.
    """

    def __init__(self, images: ImageList, recipe: Recipe, info: DistInfo, *,
                 prefetch: int = 2, num_threads: int | None = None,
                 hw_decoder_load: float = 0.65) -> None:
        self.images = images
        self.info = info
        self.num_classes = len(images.classes)
        self.batch_size = _per_device_batch(recipe, info)
        # unreadable val images are left out of the counts, as on the timm path
        shard = shard_indices(len(images), info.rank, info.world_size)
        self.indices = [i for i in shard if i not in images.stand_in]
        self.bad_indices: list[int] = []
        self._unreadable = [i for i in shard if i in images.stand_in]
        self.prefetch = prefetch
        self.num_threads = num_threads if num_threads is not None else recipe.num_workers
        self.hw_decoder_load = hw_decoder_load
        self.spec = eval_spec(recipe)
        self.device_id = _device_id(info)
        self._batches: Any = None  # the DALI iterator over the kept pipeline
        self.builds = 0  # pipelines built (one per run unless an evaluation stops part-way)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def _iterator(self) -> Any:
        from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

        from reproduce.data.dali.pipeline import READER, eval_pipeline

        file_list = write_file_list(_list_path("val"), self.images, self.indices)
        try:  # the reader parses its file list when the pipeline is built
            pipe = eval_pipeline(file_list, self.images.root, self.spec,
                                 batch_size=self.batch_size, num_threads=self.num_threads,
                                 device_id=self.device_id, prefetch=self.prefetch,
                                 hw_decoder_load=self.hw_decoder_load)
        finally:
            file_list.unlink(missing_ok=True)
        self.builds += 1
        # auto_reset: a finished pass rewinds the reader and refills the prefetch queue
        return DALIGenericIterator(pipe, ["x", "y"], reader_name=READER,
                                   last_batch_policy=LastBatchPolicy.PARTIAL, auto_reset=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.indices:  # more ranks than val images
            return
        self.bad_indices += self._unreadable
        if self._batches is None:
            self._batches = self._iterator()
        finished = False
        try:
            for out in self._batches:
                x, y = out[0]["x"], out[0]["y"].reshape(-1).long()
                yield x.to(self.info.device), y.to(self.info.device)
            finished = True
        finally:
            if not finished:  # stopped part-way: DALI cannot rewind mid-epoch
                self._batches = None


def _check_processes(recipe: Recipe) -> int:
    """Processes for the up-front decode check of a folder: the CPUs this process may run on
    (a SLURM task's ``--cpus-per-task``, not the node's count; loader threads are busy only
    once training starts), at most twice the recipe's workers and 32."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    return max(1, min(cpus, max(recipe.num_workers, 1) * 2, 32))


def build_train_loader(root: Path, recipe: Recipe, info: DistInfo, **kwargs: Any
                       ) -> DaliTrainLoader:
    """The DALI training loader of the ImageNet-layout folder ``root`` for this rank."""
    images = image_list(Path(root).expanduser(), "train", recipe.train_subset,
                        check_files=_check_processes(recipe), info=info)
    return DaliTrainLoader(images, recipe, info, **kwargs)


def build_val_loader(root: Path, recipe: Recipe, info: DistInfo, **kwargs: Any
                     ) -> DaliValLoader:
    """The DALI evaluation loader of ``root``'s val split, this rank's shard."""
    images = image_list(Path(root).expanduser(), "val", recipe.val_subset,
                        check_files=_check_processes(recipe), info=info)
    return DaliValLoader(images, recipe, info, **kwargs)

"""Which files a DALI pipeline reads: the same list, in the same index order, as torchvision's
``ImageFolder`` that the timm path uses, so a sampler index means the same image on both paths.

``ImageFolder`` numbers classes by sorted folder name and lists each class's files sorted
(``torchvision/datasets/folder.py``: ``find_classes``, ``make_dataset``); the subset of a quick
run (``train_subset`` / ``val_subset``) is taken with the timm path's own helper (the same fixed
shuffle). DALI's file reader takes a list file (``file_list``, one ``path label`` line per
sample, paths relative to ``file_root``): for ImageNet's 1.28 M entries, writing and parsing
it took about a third of the time of passing the same Python list (one run on a shared CPU).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reproduce.utils.distributed import DistInfo

__all__ = ["ImageList", "image_list", "unreadable_once_per_node", "write_file_list"]


@dataclass(frozen=True)
class ImageList:
    """One split of an ImageNet-layout folder: paths relative to ``root``, labels, classes."""

    root: Path  # the split folder, e.g. <data>/train
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]
    #: unreadable files -> the readable sample that stands in for them (the next one in folder
    #: order, as the timm path's TolerantImageFolder substitutes)
    stand_in: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def path_of(self, index: int) -> str:
        return str(self.root / self.paths[index])


def unreadable_once_per_node(split_root: Path, paths: list[str], processes: int,
                             info: DistInfo | None = None) -> list[int]:
    """The unreadable files among ``paths``, decoded by one process per node.

    Local rank 0 runs the check (:func:`reproduce.data.images.find_unreadable`, ``processes``
    parallel decoders) and writes its cache; the other ranks wait at a barrier (hours:
    :func:`reproduce.utils.distributed.long_barrier`, not the training loop's 10-minute
    collective timeout; a first check of ImageNet on a network file system takes long), then
    read that cache, so an 8-GPU node decodes the split once, not 8 times. A rank that finds
    no cache (an unwritable cache folder, a cache folder private to each rank) checks by itself,
    as every rank did before. An error of the check is raised after the barrier, on local rank
    0, so the other ranks are not left waiting for it.
    """
    import torch.distributed as dist

    from reproduce.data.images import find_unreadable
    from reproduce.utils.distributed import long_barrier

    if info is None or not info.distributed or not dist.is_initialized():
        return find_unreadable(str(split_root), paths, processes)  # no group to wait in
    bad: list[int] = []
    failed: BaseException | None = None
    if info.local_rank == 0:
        try:
            bad = find_unreadable(str(split_root), paths, processes)
        except Exception as err:  # raised below, once every rank has passed the barrier
            failed = err
    long_barrier(info)
    if failed is not None:
        raise failed
    if info.local_rank != 0:
        bad = find_unreadable(str(split_root), paths, processes, say=_quiet)
    return bad


def _quiet(line: str) -> None:
    """Ranks other than local rank 0 read the cache silently (local rank 0 said it)."""


def image_list(root: Path, split: str, subset: int = 0, check_files: int = 0,
               info: DistInfo | None = None) -> ImageList:
    """The samples of ``root/split`` in ``ImageFolder`` order (optionally the recipe's subset).

    The folder is checked first (:func:`reproduce.data.datasets.check_imagefolder`), so a bad layout
    gives the same one-line error on both loaders. With ``check_files`` (a number of
    processes) every file is decoded once up front (:func:`unreadable_once_per_node`, cached,
    by local rank 0 of each node under ``info``): DALI cannot skip a file inside its pipeline,
    so unreadable ones get a stand-in.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    from reproduce.data.datasets import _subset, check_imagefolder

    check_imagefolder(root)
    split_root = root / split
    classes, class_to_idx = find_classes(str(split_root))
    samples = make_dataset(str(split_root), class_to_idx, extensions=IMG_EXTENSIONS)
    kept = _subset(samples, subset)  # type: ignore[arg-type]  # a list or a Subset of it
    picked = [kept[i] for i in range(len(kept))]  # type: ignore[arg-type]
    # make_dataset joins the folder and each name: cut the prefix (Path.relative_to over 1.28M
    # ImageNet paths costs seconds at every start)
    prefix = os.path.join(os.path.expanduser(str(split_root)), "")
    paths = tuple(p.removeprefix(prefix) for p, _ in picked)
    stand_in: dict[int, int] = {}
    if check_files:
        bad = set(unreadable_once_per_node(split_root, list(paths), check_files, info))
        if len(bad) == len(paths):
            from reproduce.errors import SrvError

            raise SrvError(f"none of the {len(paths)} images of {split_root} decodes: check "
                           f"the folder (a failed copy, no read permission)")
        for i in sorted(bad):
            j = (i + 1) % len(paths)
            while j in bad:
                j = (j + 1) % len(paths)
            stand_in[i] = j
    return ImageList(
        root=split_root,
        paths=paths,
        labels=tuple(int(c) for _, c in picked),
        classes=tuple(classes),
        stand_in=stand_in,
    )


def write_file_list(path: Path, images: ImageList, order: Sequence[int]) -> Path:
    """Write DALI's ``file_list`` for the samples ``order`` (indices into ``images``, repeats
    allowed); DALI reads the lines in this order when its shuffling is off."""
    use = [images.stand_in.get(i, i) for i in order]  # unreadable files: their stand-in
    lines = [f"{images.paths[i]} {images.labels[i]}\n" for i in use]
    path.write_text("".join(lines))
    return path

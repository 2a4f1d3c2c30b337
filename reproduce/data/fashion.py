"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv 1708.07747): 70,000 28x28 grayscale images of
10 clothing classes, 60,000 train / 10,000 test, in the four IDX files of the original release.

The regime scale of issue 28: unlike digits (360 val images, the conv-stem near 98%), both stems
can train and stay off the ceiling, with at least 1,000 validation images.

* **Files.** ``--data DIR`` (default: Debian's ``dataset-fashion-mnist`` package,
  ``/usr/share/datasets/fashion-mnist``) holds the four files, each plain or ``.gz``, directly or
  in torchvision's layout (``DIR/FashionMNIST/raw/``). They are read by torchvision's
  ``FashionMNIST`` (``download=False``): it wants plain files under ``root/FashionMNIST/raw``, so a
  temporary folder of that layout is made (``.gz`` files decompressed into it, plain ones linked)
  and removed once the tensors are in memory.
* **Tensors.** As the digits (:func:`reproduce.data.datasets.digits_tensors`): in memory, no
  augmentation, 3 channels (the ViT's input). A 28x28 image is zero-padded (the background) to
  ``img_size`` when the difference is even (2 pixels a side at 32: LeNet-5's 32x32 input, LeCun et
  al. 1998), else resized bilinearly; then normalised with the training set's pixel mean / std
  (0.2860 / 0.3530, measured on the 60,000 28x28 training images).
* **Subsets.** ``train_subset`` / ``val_subset`` take a class-balanced subset: per class the first
  ``k`` of a shuffle with a fixed seed (:data:`SUBSET_SEED`, not the run's), so every run of a
  size sees the same images and a smaller subset is inside a larger one. A validation subset must
  hold at least :data:`MIN_VAL` images (issue 28's criterion); 0 takes all 10,000.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
from pathlib import Path

import torch

from reproduce.errors import SrvError

__all__ = ["FILES", "DEBIAN_DIR", "DEBIAN_PACKAGE", "find_files", "read_idx", "to_input",
           "balanced_subset", "check_val_subset", "fashion_tensors"]

#: the four files of the release (torchvision's names, without ``.gz``)
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
TRAIN_IMAGES, TEST_IMAGES, CLASSES = 60_000, 10_000, 10
MIN_VAL = 1_000
#: pixel mean / std of the 60,000 28x28 training images in [0, 1]
MEAN, STD = 0.2860, 0.3530
SUBSET_SEED = 0


def data_dir(data_path: str) -> Path:
    """The folder the recipe points at: ``data_path``, else Debian's package folder."""
    return Path(data_path or DEBIAN_DIR).expanduser()


def missing_message(root: Path) -> str:
    """The one-line reason a run cannot find the files (srv: error: ...)."""
    return (f"no Fashion-MNIST at {root}: the fashion-mnist data set needs the four IDX files "
            f"{', '.join(FILES)} (each plain or .gz) in one folder; install Debian's package "
            f"{DEBIAN_PACKAGE} (it puts them in {DEBIAN_DIR}) or give --data DIR")


def find_files(root: Path) -> dict[str, Path]:
    """The four files in ``root`` or in ``root/FashionMNIST/raw`` (torchvision's layout), each
    plain or gzipped (the plain one first); raises :class:`SrvError` naming all four."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        found: dict[str, Path] = {}
        for name in FILES:
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
        if len(found) == len(FILES):
            return found
    raise SrvError(missing_message(root))


def read_idx(root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                  list[str]]:
    """``(train images, train labels, test images, test labels, class names)`` as torchvision's
    ``FashionMNIST`` reads them: uint8 ``(N, H, W)`` images and int64 labels."""
    from torchvision.datasets import FashionMNIST

    files = find_files(root)
    with tempfile.TemporaryDirectory(prefix="srv-fashion-") as tmp:
        raw = Path(tmp) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        try:
            for name, path in files.items():
                if path.suffix == ".gz":
                    with gzip.open(path, "rb") as src, open(raw / name, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                else:
                    (raw / name).symlink_to(path.resolve())
            train = FashionMNIST(tmp, train=True, download=False)
            test = FashionMNIST(tmp, train=False, download=False)
        except (OSError, EOFError, RuntimeError, ValueError, TypeError, AssertionError) as err:
            raise SrvError(f"the Fashion-MNIST files in {root} are not readable IDX files "
                           f"({type(err).__name__}: {err}); reinstall {DEBIAN_PACKAGE} or "
                           f"copy the four files again") from None
    for images, labels, split in ((train.data, train.targets, "train"),
                                  (test.data, test.targets, "t10k")):
        if len(images) != len(labels) or not len(labels):
            raise SrvError(f"{root}: {split} has {len(images)} images and {len(labels)} labels; "
                           f"the two files must belong together")
        if int(labels.min()) < 0 or int(labels.max()) >= CLASSES:
            raise SrvError(f"{root}: {split} labels must be 0-{CLASSES - 1}, found "
                           f"{int(labels.min())}-{int(labels.max())}")
    return train.data, train.targets, test.data, test.targets, list(train.classes)


def to_input(images: torch.Tensor, img_size: int) -> torch.Tensor:
    """uint8 ``(N, H, W)`` -> normalised float ``(N, 3, img_size, img_size)``: zero-padded
    (centred) when ``img_size - H`` is even and >= 0, else bilinear; the 3 channels are a view
    of one (a batch is made contiguous when the loader stacks it)."""
    import torch.nn.functional as F

    x = images.unsqueeze(1).float() / 255.0
    h, w = x.shape[-2:]
    pad_h, pad_w = img_size - h, img_size - w
    if pad_h >= 0 and pad_w >= 0 and pad_h % 2 == 0 and pad_w % 2 == 0:
        x = F.pad(x, (pad_w // 2, pad_w // 2, pad_h // 2, pad_h // 2))
    else:
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    return ((x - MEAN) / STD).expand(-1, 3, -1, -1)


def balanced_subset(labels: torch.Tensor, n: int, seed: int = SUBSET_SEED) -> torch.Tensor:
    """Sorted indices of a class-balanced subset of ``n`` items: ``n // classes`` per class (the
    remainder to the lowest classes), the first ones of a per-class shuffle with ``seed``; all
    of a class when it has fewer. ``n = 0`` or ``n >= len(labels)``: every index."""
    if not n or n >= len(labels):
        return torch.arange(len(labels))
    classes = sorted(int(c) for c in labels.unique())
    g = torch.Generator().manual_seed(seed)
    picked = []
    for i, c in enumerate(classes):
        members = (labels == c).nonzero().flatten()
        k = n // len(classes) + (1 if i < n % len(classes) else 0)
        picked.append(members[torch.randperm(len(members), generator=g)[:k]])
    return torch.cat(picked).sort().values


def check_val_subset(val_subset: int) -> None:
    """A validation subset holds at least :data:`MIN_VAL` images (0: all of them)."""
    if val_subset and val_subset < MIN_VAL:
        raise SrvError(f"val_subset={val_subset}: Fashion-MNIST's validation set must hold at "
                       f"least {MIN_VAL:,} images (issue 28's criterion); use 0 for all "
                       f"{TEST_IMAGES:,} or a subset of {MIN_VAL:,} or more")


def fashion_tensors(data_path: str, img_size: int = 32, train_subset: int = 0,
                    val_subset: int = 0, train: bool = True
                    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor,
                               torch.Tensor, list[str]]:
    """``(x_train, y_train, x_val, y_val, class names)``: the recipe's subsets of Fashion-MNIST's
    train and test files (the test set is the validation set, as for CIFAR and ImageNet), as
    :func:`to_input` makes them; the train pair is None when ``train=False``."""
    check_val_subset(val_subset)
    xt, yt, xv, yv, classes = read_idx(data_dir(data_path))
    iv = balanced_subset(yv, val_subset)
    x_val, y_val = to_input(xv[iv], img_size), yv[iv]
    if not train:
        return None, None, x_val, y_val, classes
    it = balanced_subset(yt, train_subset)
    return to_input(xt[it], img_size), yt[it], x_val, y_val, classes

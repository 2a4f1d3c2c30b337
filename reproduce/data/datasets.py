"""Data sets and transforms: ImageNet-style folders, the embedded digits, Fashion-MNIST,
synthetic, CIFAR.

* ``imagefolder``: ``<path>/train/<class>/*.jpg`` and ``<path>/val/<class>/*.jpg`` (ImageNet
  layout), checked before training starts (:func:`check_imagefolder`). Read with
  :class:`.images.TolerantImageFolder`: an unreadable file is skipped and reported, its
  items are ``(image, target, bad)``.
* ``digits``: the 1,797 8x8 digit images that ship inside scikit-learn, upsampled to
  ``img_size`` with 3 channels, fixed stratified split of 1,437 train / 360 val (docs/paper.md
  §5). Needs no download, so a fresh machine can train at once.
* ``fashion-mnist``: Fashion-MNIST's 60,000 train / 10,000 test 28x28 images from the four IDX
  files (``--data DIR``, default Debian's ``dataset-fashion-mnist``), padded to ``img_size``, 3
  channels, class-balanced fixed subsets (:mod:`.fashion`). In memory like the digits.
* ``synthetic``: random tensors with random labels, for throughput checks.
* ``cifar10`` / ``cifar100``: torchvision's loaders from a local folder (never downloads).

Augmentation (RandAugment, AutoAugment, random erasing, RandomResizedCrop) is timm's
``create_transform`` plus pycls's PCA lighting (:mod:`reproduce.data.transforms`); Mixup/CutMix is
timm's ``Mixup``, applied to batches by the engine.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from reproduce.errors import SrvError
from reproduce.recipes.recipe import IN_MEMORY_DATASETS, Recipe

#: why a run on an image folder with no folder given cannot start (also srv train / ablate
#: --dry-run's reason)
NO_DATA = ("the imagefolder data set needs --data PATH (a folder with train/ and val/), or use "
           "--dataset digits")

__all__ = ["Datasets", "build_datasets", "check_imagefolder", "digits_tensors"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
DIGITS_VAL = 360
SYNTHETIC_CLASSES = 1000


@dataclass
class Datasets:
    """Train and val data sets plus what the model and the report need to know about them."""

    train: Dataset | None  # None when only evaluating
    val: Dataset
    num_classes: int
    description: str
    eval_transform: str
    #: what the data set is, independent of where it lives: class names (hashed) and image
    #: counts; a run refuses to resume on data whose fingerprint changed
    fingerprint: dict[str, Any] = field(default_factory=dict)


def fingerprint(kind: str, classes: list[str] | int, n_train: int | None, n_val: int
                ) -> dict[str, Any]:
    """The identity of a data set: kind, number and names of classes, image counts."""
    names = [str(c) for c in classes] if isinstance(classes, list) else []
    return {"dataset": kind, "num_classes": len(names) if names else int(classes),  # type: ignore[arg-type]
            "classes_sha": hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
            if names else None, "train_images": n_train, "val_images": n_val}


def digits_tensors(img_size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                torch.Tensor]:
    """scikit-learn's digits as ``(x_train, y_train, x_val, y_val)``: float images in [0, 1]
    upsampled to ``img_size`` (bilinear), 3 channels, normalised with mean 0.5 / std 0.5.
    The split is fixed and stratified (seed 0): 1,437 train / 360 val."""
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
    idx = torch.arange(len(y)).numpy()
    tr, va = train_test_split(idx, test_size=DIGITS_VAL, random_state=0,
                              stratify=digits.target)
    tr, va = torch.as_tensor(sorted(tr)), torch.as_tensor(sorted(va))
    return x[tr], y[tr], x[va], y[va]


def _class_dirs(split: Path) -> list[str]:
    return sorted(d.name for d in split.iterdir() if d.is_dir() and not d.name.startswith("."))


def check_imagefolder(root: Path) -> list[str]:
    """Check an ImageNet-layout folder before training; return the class names.

    Catches: a missing path or split, a flat val folder (images without class folders, as the
    ImageNet val tarball unpacks), class folders of train and val that disagree, empty classes.
    """
    if not root.is_dir():
        raise SrvError(f"no data at {root}: give --data PATH to a folder with train/ and val/ "
                       f"(one sub-folder per class), or use --dataset digits")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise SrvError(f"{root} has no {split}/ folder: the layout is {root}/train/<class>/"
                           f"*.jpg and {root}/val/<class>/*.jpg")
    train_classes = _class_dirs(root / "train")
    val_classes = _class_dirs(root / "val")
    loose = [p for p in (root / "val").iterdir() if p.suffix.lower() in IMG_EXTENSIONS]
    if loose:
        raise SrvError(f"{root}/val holds {len(loose)} images directly instead of one folder "
                       f"per class (the flat ImageNet val layout): move each image into "
                       f"val/<class>/ (e.g. with the valprep.sh script of the ImageNet docs)")
    if not train_classes:
        raise SrvError(f"{root}/train has no class folders: put images in train/<class>/")
    if train_classes != val_classes:
        only_train = sorted(set(train_classes) - set(val_classes))[:3]
        only_val = sorted(set(val_classes) - set(train_classes))[:3]
        raise SrvError(f"class folders of train/ and val/ differ (only in train: {only_train}, "
                       f"only in val: {only_val}): both must hold the same class folders")
    for split in ("train", "val"):
        for cls in train_classes:
            folder = root / split / cls
            if not any(p.suffix.lower() in IMG_EXTENSIONS for p in folder.iterdir()):
                raise SrvError(f"class folder {folder} has no images: remove it from both "
                               f"train/ and val/ or add its images")
    return train_classes


def synthetic_sizes(r: Recipe) -> tuple[int, int]:
    """Train and val images of the synthetic data set (enough for 8 steps, and one batch)."""
    return r.train_subset or max(r.batch_size * 8, 256), r.val_subset or max(r.batch_size, 128)


#: torchvision's CIFAR-10 per-channel mean and std (used for CIFAR-100 too)
CIFAR_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def transforms_for(r: Recipe) -> tuple[Any, Any, str]:
    """The recipe's train / eval transforms for its data set (timm's, plus PCA lighting:
    :mod:`.transforms`) and the eval transform's description; none for in-memory tensors."""
    if r.dataset in IN_MEMORY_DATASETS:
        return None, None, "none (tensors)"
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    from reproduce.data.transforms import build_transforms

    if r.dataset == "imagefolder":
        return build_transforms(r, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    return build_transforms(r, *CIFAR_MEAN_STD)


def _subset(ds: Dataset, n: int, seed: int = 0) -> Dataset:
    """The first ``n`` items of a fixed shuffle (independent of the run's seed)."""
    if not n or n >= len(ds):  # type: ignore[arg-type]
        return ds
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(ds), generator=g)[:n].sort().values  # type: ignore[arg-type]
    return Subset(ds, idx.tolist())


def _fashion(r: Recipe, train: bool) -> Datasets:
    """Fashion-MNIST's tensors (:mod:`.fashion`): the test files are the val set."""
    from reproduce.data.fashion import data_dir, fashion_tensors

    xt, yt, xv, yv, classes = fashion_tensors(r.data_path, r.img_size, r.train_subset,
                                              r.val_subset, train)
    n_train = len(yt) if yt is not None else None
    train_set = TensorDataset(xt, yt) if xt is not None and yt is not None else None
    how = "padded" if (r.img_size - 28) % 2 == 0 and r.img_size >= 28 else "bilinear resize"
    return Datasets(train_set, TensorDataset(xv, yv), len(classes),
                    f"fashion-mnist ({data_dir(r.data_path)}), {n_train} train / {len(yv)} "
                    f"val, {r.img_size}x{r.img_size}", f"28x28 {how} to {r.img_size}",
                    fingerprint("fashion-mnist", classes, n_train, len(yv)))


def build_datasets(r: Recipe, train: bool = True) -> Datasets:
    """Build the recipe's train (unless ``train=False``) and val sets, validating paths and
    layout first."""
    if r.dataset == "digits":
        xt, yt, xv, yv = digits_tensors(r.img_size)
        out = Datasets(TensorDataset(xt, yt), TensorDataset(xv, yv), 10,
                       f"digits (scikit-learn), {len(yt)} train / {len(yv)} val, "
                       f"{r.img_size}x{r.img_size}", f"bilinear upsample to {r.img_size}",
                       fingerprint("digits", 10, len(yt), len(yv)))
    elif r.dataset == "fashion-mnist":
        out = _fashion(r, train)
    elif r.dataset == "synthetic":
        n_classes = r.num_classes or SYNTHETIC_CLASSES
        g = torch.Generator().manual_seed(1234)
        n_train, n_val = synthetic_sizes(r)
        make = lambda n: TensorDataset(  # noqa: E731
            torch.randn(n, 3, r.img_size, r.img_size, generator=g),
            torch.randint(0, n_classes, (n,), generator=g))
        return Datasets(make(n_train), make(n_val), n_classes,
                        f"synthetic, {n_train} train / {n_val} val", "none")
    elif r.dataset == "imagefolder":
        from reproduce.data.images import TolerantImageFolder

        if not r.data_path:
            raise SrvError(NO_DATA)
        root = Path(r.data_path).expanduser()
        classes = check_imagefolder(root)
        train_tf, eval_tf, desc = transforms_for(r)
        # bad files are skipped and reported, not fatal: items are (image, target, bad)
        train_set = (TolerantImageFolder(str(root / "train"), transform=train_tf)
                     if train else None)
        val_set = TolerantImageFolder(str(root / "val"), transform=eval_tf)
        out = Datasets(train_set, val_set, len(classes),
                       f"imagefolder {root} ({len(classes)} classes)", desc,
                       fingerprint("imagefolder", classes,
                                   len(train_set) if train_set is not None else None,
                                   len(val_set)))
    else:  # cifar10 / cifar100
        from torchvision import datasets

        cls = datasets.CIFAR10 if r.dataset == "cifar10" else datasets.CIFAR100
        root = Path(r.data_path or os.environ.get("SRV_DATA", "data")).expanduser()
        train_tf, eval_tf, desc = transforms_for(r)
        try:
            train = cls(str(root), train=True, transform=train_tf, download=False)
            val = cls(str(root), train=False, transform=eval_tf, download=False)
        except RuntimeError:
            raise SrvError(f"no {r.dataset} data under {root}: put torchvision's extracted "
                           f"{r.dataset} folder there and pass --data {root} (srv never "
                           f"downloads)") from None
        out = Datasets(train, val, len(train.classes), f"{r.dataset} at {root}", desc,
                       fingerprint(r.dataset, list(train.classes), len(train), len(val)))
    if r.num_classes and r.num_classes != out.num_classes:
        raise SrvError(f"num_classes={r.num_classes} but the data set has {out.num_classes} "
                       f"classes: drop the num_classes override")
    if out.train is not None:
        out.train = _subset(out.train, r.train_subset)
    out.val = _subset(out.val, r.val_subset)
    return out

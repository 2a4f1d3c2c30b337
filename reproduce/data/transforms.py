"""Train and eval transforms: timm's ``create_transform`` plus the one pycls step timm lacks.

timm builds the pipelines DeiT uses (deit ``datasets.py:78-109``): RandomResizedCrop, flip,
RandAugment / AutoAugment, colour jitter, normalisation and random erasing for training; resize
``img_size / crop_pct`` and a centre crop for eval. pycls (Xiao et al.) adds AlexNet-style PCA
lighting noise after the augmentation and before the colour normalisation
(``pycls/datasets/imagenet.py:81``, branch ``vitconfigs``): :class:`Lighting`, recipe key
``pca_std``.
"""

from __future__ import annotations

from typing import Any

import torch

from reproduce.recipes.recipe import Recipe

__all__ = ["Lighting", "IMAGENET_EIGVAL", "IMAGENET_EIGVEC", "build_transforms", "eval_resize"]

#: ImageNet RGB eigenvalues / eigenvectors of the pixel covariance, as pycls uses them
#: (``pycls/datasets/imagenet.py:28-35``, from fb.resnet.torch ``datasets/imagenet.lua``)
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


class Lighting:
    """AlexNet-style PCA lighting noise on a ``(3, H, W)`` RGB tensor in [0, 1].

    Adds ``V @ (alpha * lambda)`` to every pixel, ``alpha ~ N(0, std)`` per image and component
    (``pycls/datasets/transforms.py:65-73``; no clamping, as there).
    """

    def __init__(self, std: float, eigval: tuple[float, ...] = IMAGENET_EIGVAL,
                 eigvec: tuple[tuple[float, ...], ...] = IMAGENET_EIGVEC) -> None:
        self.std = std
        self.eigval = torch.tensor(eigval)
        self.eigvec = torch.tensor(eigvec)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.std <= 0:
            return img
        alpha = torch.randn(3) * self.std
        rgb = self.eigvec @ (alpha * self.eigval)
        return img + rgb.to(img.dtype)[:, None, None]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(std={self.std})"


def eval_resize(r: Recipe) -> int:
    """The eval resize of the shorter side (timm: ``floor(img_size / crop_pct)``)."""
    import math

    return math.floor(r.img_size / r.crop_pct)


def build_transforms(r: Recipe, mean: Any, std: Any) -> tuple[Any, Any, str]:
    """``(train transform, eval transform, one-line eval description)`` for image data."""
    from timm.data import create_transform
    from torchvision.transforms import Normalize

    train_tf = create_transform(
        r.img_size, is_training=True, scale=(r.scale_min, 1.0), hflip=r.hflip,
        color_jitter=r.color_jitter or None, auto_augment=r.aa or None,
        interpolation=r.interpolation, mean=mean, std=std, re_prob=r.reprob,
        re_mode=r.remode, re_count=r.recount,
    )
    if r.pca_std > 0:  # after the augmentation, on [0, 1] RGB, before the normalisation
        steps = train_tf.transforms
        at = next(i for i, t in enumerate(steps) if isinstance(t, Normalize))
        steps.insert(at, Lighting(r.pca_std))
    eval_tf = create_transform(
        r.img_size, is_training=False, interpolation=r.interpolation, crop_pct=r.crop_pct,
        mean=mean, std=std,
    )
    desc = f"resize {eval_resize(r)} ({r.interpolation}), centre crop {r.img_size}"
    from reproduce.data.augment import (
        guard_transform,  # posterize with 0 bits: black image, not a crash
    )

    return guard_transform(train_tf), eval_tf, desc

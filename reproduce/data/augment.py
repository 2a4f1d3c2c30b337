"""Guards for timm's PIL augmentation ops, so every recipe's train transform survives any draw:
a posterize to 0 bits (timm's RandAugment at magnitude 10, DeiT's recipe) gives a black image,
as TF's and UDA's reference code do, instead of Pillow's error. Imports no srv module; the
sources are in docs/training.md.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageOps

__all__ = ["posterize", "guard_transform"]


def posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize op with the TF / UDA meaning of ``bits_to_keep <= 0``: a black image.

    ``bits_to_keep >= 8`` keeps the image (as timm does); 1..7 is ``ImageOps.posterize``.
    """
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)  # every channel 0: no bit kept
    return ImageOps.posterize(img, bits_to_keep)


def _augment_ops(transform: Any) -> list[Any]:
    """Every timm ``AugmentOp`` inside ``transform`` (Compose, RandAugment, AutoAugment, AugMix)."""
    from timm.data.auto_augment import AugmentOp

    found: list[Any] = []
    stack = [transform]
    while stack:
        t = stack.pop()
        if isinstance(t, AugmentOp):
            found.append(t)
        elif isinstance(t, list | tuple):
            stack.extend(t)
        else:  # Compose.transforms, RandAugment.ops, AugMixAugment.ops, AutoAugment.policy
            for attr in ("transforms", "ops", "policy"):
                if isinstance(getattr(t, attr, None), list | tuple):
                    stack.extend(getattr(t, attr))
    return found


def guard_transform(transform: Any) -> Any:
    """Give every posterize op inside ``transform`` :func:`posterize`; returns ``transform``."""
    for op in _augment_ops(transform):
        if op.name.startswith("Posterize"):
            op.aug_fn = posterize
    return transform

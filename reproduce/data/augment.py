"""Guards for timm's PIL augmentation ops: every recipe's train transform survives any draw.

**Posterize with 0 bits.** timm's RandAugment ``rand-m9-mstd0.5-inc1`` (the DeiT recipe) uses
``PosterizeIncreasing``, whose argument is ``4 - int(m / 10 * 4)`` bits to keep
(``timm/data/auto_augment.py``, ``_posterize_increasing_level_to_arg``). With ``mstd0.5`` the
magnitude ``m`` is drawn from N(9, 0.5) and clipped to [0, 10]; ``m = 10`` (about 2.3% of draws)
asks for **0 bits**. timm hands that to ``PIL.ImageOps.posterize``, which Pillow >= 13 rejects
(``ValueError: bits must be between or equal to 1 and 8``): about one transform in 1,000 raises,
a loader worker dies and the run with it. The plain ``Posterize`` op (TF ``v0`` AutoAugment
policy, RandAugment without ``inc1``) asks for 0 bits at magnitudes below 2.5.

What 0 bits means is not in doubt: keep none of the 8 bits, i.e. a **black image**.

* TF TPU EfficientNet AutoAugment, the reference timm adapts (``tensorflow/tpu``
  ``models/official/efficientnet/autoaugment.py`` l. 222-225): ``shift = 8 - bits`` and
  ``(image >> shift) << shift``; with ``bits = 0`` every uint8 pixel becomes 0.
* UDA's RandAugment (``google-research/uda`` ``image/randaugment/augmentation_transforms.py``,
  ``_posterize_impl``), the source of timm's "increasing" variant: ``ImageOps.posterize(img,
  4 - level)`` with ``level`` up to 4, i.e. 0 bits, which older Pillow computed with the mask
  ``~(2 ** 8 - 1)``: all zeros.
* timm itself says so beside its ``v0`` policy: ``('Posterize', 0.8, 2)`` "results in black
  image with Tpu posterize" (``timm/data/auto_augment.py``, ``auto_augment_policy_v0``).

So :func:`posterize` keeps timm's op and its draws unchanged (same random calls, same
arguments) and only gives ``bits <= 0`` its reference meaning instead of an exception.
:func:`guard_transform` installs it on the ops of a built transform (RandAugment,
AutoAugment, AugMix: every ``AugmentOp`` named ``Posterize*``), leaving timm's module tables
untouched, so only srv's transforms change and they stay picklable for loader workers.

**The other ops** of timm's table were checked for arguments Pillow refuses, at magnitudes 0 to
30 (beyond the default cap of 10, as ``mmax`` allows) on RGB images down to 1x1 pixel and
constant ones: solarize thresholds and solarize-add offsets are look-up tables (any value is
valid), the enhance factors stay >= 0.1, rotate / shear / translate are affine maps with any
finite argument, equalize / autocontrast / invert take no argument and handle constant images.
Only posterize has an invalid corner. (The affine ops fill with an RGB triple, so they need RGB
input; srv's loaders convert every image to RGB.) ``tests/test_augment.py`` sweeps every op and
soaks every recipe's full train transform to keep it that way.
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

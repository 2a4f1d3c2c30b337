"""timm's augmentation ops (``timm/data/auto_augment.py``) written with DALI operators.

Each op is a level function (timm's ``LEVEL_TO_ARG``: magnitude -> op argument) and an apply
function (timm's ``NAME_TO_OP``: image, argument -> image), on uint8 HWC images on the CPU or the
GPU. Magnitudes and signs are plain numbers (a fixed policy) or per-sample CPU scalars (timm's
magnitude noise, random negation): the same level code serves both, so the parity tests can
check it against timm's own functions with numbers.

The pixel arithmetic follows Pillow, which timm's ops call:

* enhancements (``ImageEnhance``) blend a degenerate image with the image in float32 and
  truncate, as ``libImaging/Blend.c``; grey is Pillow's integer ITU-R 601-2 luma
  (``libImaging/Convert.c``), the contrast centre its rounded mean, sharpness blurs with
  ``ImageFilter.SMOOTH`` and keeps the 1-pixel border (``libImaging/Filter.c``);
* warps (``Image.transform(AFFINE)`` / ``Image.rotate``) use Pillow's output-to-input matrix and
  its edge rule: a pixel whose source lies outside the image gets the fill colour (timm's
  ``img_mean``), one inside is interpolated from clamped neighbours;
* point ops (invert, solarize, solarize-add, posterize) are exact.

Remaining differences (docs/dali.md lists them with measured sizes): DALI's warps have no bicubic
(bilinear instead), equalize is DALI's OpenCV-style lookup table rather than Pillow's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import Any

import numpy as np
import nvidia.dali.math as dmath
from nvidia.dali import fn, types
from nvidia.dali.data_node import DataNode

__all__ = ["OpContext", "Op", "OPS", "apply_op", "level_param", "LEVEL_DENOM"]

#: timm's ``_LEVEL_DENOM``: magnitude 10 is the full strength of an op
LEVEL_DENOM = 10.0

Value = Any  # a Python number or a DataNode holding one scalar per sample (CPU)


@dataclass(frozen=True)
class OpContext:
    """What the ops need to know about the images they transform.

    ``fill`` is timm's ``img_mean`` hparam (``create_transform``: the data mean in 0-255);
    ``size`` (height, width) is the image size, fixed after the random-resized crop; ``interp``
    is the warp interpolation (DALI warps offer nearest and bilinear only).
    """

    size: tuple[int, int]
    fill: tuple[int, int, int] = (128, 128, 128)
    interp: Any = types.INTERP_LINEAR


# --- numbers or per-sample scalars ----------------------------------------------------------


def _is_node(x: Value) -> bool:
    return isinstance(x, DataNode)


def _floor(x: Value) -> Value:
    return dmath.floor(x) if _is_node(x) else math.floor(x)


def _min(x: Value, c: float) -> Value:
    return dmath.min(x, c) if _is_node(x) else min(x, c)


def _max(x: Value, c: float) -> Value:
    return dmath.max(x, c) if _is_node(x) else max(x, c)


def _k(value: float, like: Value) -> Value:
    """The double ``value`` in ``like``'s arithmetic: the number itself, or for a DALI scalar
    the same double built as integer / integer (DALI keeps float literals in float32)."""
    if not _is_node(like):
        return value
    exact = Fraction(str(value))
    return (like * 0 + exact.numerator) / exact.denominator


def _scalar(x: Value, dtype: Any) -> Any:
    """A per-sample argument for pixel arithmetic: a typed DALI scalar."""
    if _is_node(x):
        return fn.cast(x, dtype=dtype)
    return types.Constant(x, dtype=dtype)


def _u8(v: int) -> Any:
    return types.Constant(v, dtype=types.UINT8)


# --- levels: timm's LEVEL_TO_ARG (m = magnitude, s = +1 or -1 from _randomly_negate) --------


def rotate_level(m: Value, s: Value) -> Value:
    """``_rotate_level_to_arg``: degrees in [-30, 30]."""
    return (m / LEVEL_DENOM) * 30.0 * s


def shear_level(m: Value, s: Value) -> Value:
    """``_shear_level_to_arg``: shear factor in [-0.3, 0.3]."""
    return (m / LEVEL_DENOM) * _k(0.3, m) * s


def translate_rel_level(m: Value, s: Value, pct: float = 0.45) -> Value:
    """``_translate_rel_level_to_arg``: fraction of the image size in [-pct, pct]."""
    return (m / LEVEL_DENOM) * _k(pct, m) * s


def enhance_level(m: Value, s: Value) -> Value:
    """``_enhance_level_to_arg``: blend factor in [0.1, 1.9], not negated."""
    return (m / LEVEL_DENOM) * _k(1.8, m) + _k(0.1, m)


def enhance_increasing_level(m: Value, s: Value) -> Value:
    """``_enhance_increasing_level_to_arg``: 1 +- up to 0.9, at least 0.1."""
    return _max(1.0 + (m / LEVEL_DENOM) * _k(0.9, m) * s, 0.1)


def posterize_level(m: Value, s: Value) -> Value:
    """``_posterize_level_to_arg``: bits kept, 0..4 (fewer bits at lower magnitude)."""
    return _floor((m / LEVEL_DENOM) * 4)


def posterize_increasing_level(m: Value, s: Value) -> Value:
    """``_posterize_increasing_level_to_arg``: bits kept, 4..0 (the ``inc1`` variant)."""
    return 4 - _floor((m / LEVEL_DENOM) * 4)


def posterize_original_level(m: Value, s: Value) -> Value:
    """``_posterize_original_level_to_arg``: bits kept, 4..8 (AutoAugment paper)."""
    return _floor((m / LEVEL_DENOM) * 4) + 4


def solarize_level(m: Value, s: Value) -> Value:
    """``_solarize_level_to_arg``: threshold 0..256 (weaker at higher magnitude)."""
    return _min(_floor((m / LEVEL_DENOM) * 256), 256)


def solarize_increasing_level(m: Value, s: Value) -> Value:
    """``_solarize_increasing_level_to_arg``: threshold 256..0 (the ``inc1`` variant)."""
    return 256 - solarize_level(m, s)


def solarize_add_level(m: Value, s: Value) -> Value:
    """``_solarize_add_level_to_arg``: value added below 128, 0..110."""
    return _min(_floor((m / LEVEL_DENOM) * 110), 128)


# --- pixel helpers ---------------------------------------------------------------------------


def _float(x: DataNode) -> DataNode:
    return fn.cast(x, dtype=types.FLOAT)


def _blend(degenerate: Any, image: DataNode, factor: Value) -> DataNode:
    """Pillow's ``Image.blend(degenerate, image, factor)``: ``d + f * (x - d)`` in float32,
    clipped to 0..255 and truncated (``libImaging/Blend.c``)."""
    out = degenerate + _scalar(factor, types.FLOAT) * (_float(image) - degenerate)
    return fn.cast(dmath.floor(dmath.clamp(out, 0.0, 255.0)), dtype=types.UINT8)


def _luma(x: DataNode) -> DataNode:
    """Pillow's RGB -> L, ``(19595 R + 38470 G + 7471 B + 0x8000) >> 16``, as HW1."""
    weights = types.Constant(np.array([19595, 38470, 7471], dtype=np.int32))
    total = fn.reductions.sum(fn.cast(x, dtype=types.INT32) * weights, axes=2, keep_dims=True)
    return (total + 32768) // 65536


def _affine(x: DataNode, coeffs: Value, ctx: OpContext) -> DataNode:
    """Pillow's ``Image.transform(size, AFFINE, coeffs, resample, fillcolor=fill)``.

    ``coeffs`` maps output to input coordinates (pixel corners at integers, as Pillow and DALI
    both use). Pillow fills a pixel whose source point lies outside the image and interpolates
    the others from clamped neighbours: the image is warped with clamping, an all-ones mask
    with nearest-neighbour and a zero fill marks the inside, and the fill colour goes outside.
    """
    ones = fn.cast(x == x, dtype=types.UINT8)  # on x's device (fn.ones_like is CPU-only)
    inside = fn.warp_affine(ones, matrix=coeffs, fill_value=0, interp_type=types.INTERP_NN)
    warped = fn.warp_affine(x, matrix=coeffs, interp_type=ctx.interp)
    fill = types.Constant(np.array(ctx.fill, dtype=np.uint8))
    return inside * warped + (_u8(1) - inside) * fill


def _matrix(coeffs: tuple[float, ...]) -> DataNode:
    """Six affine coefficients as the 2x3 constant DALI's warp takes per sample."""
    return types.Constant(np.array(coeffs, dtype=np.float32).reshape(2, 3))


def _coeffs(base: tuple[float, ...], direction: tuple[float, ...], p: Value) -> Value:
    """``base + p * direction`` as 6 affine coefficients (a list for a number)."""
    if _is_node(p):
        return _matrix(base) + fn.cast(p, dtype=types.FLOAT) * _matrix(direction)
    return [b + p * d for b, d in zip(base, direction, strict=True)]


# --- ops: timm's NAME_TO_OP ------------------------------------------------------------------


def auto_contrast(x: DataNode, _: Value, ctx: OpContext) -> DataNode:
    """``ImageOps.autocontrast``: per channel, ``int(v * 255 / (hi - lo) - lo * scale)``."""
    lo = _float(fn.reductions.min(x, axes=(0, 1), keep_dims=True))
    hi = _float(fn.reductions.max(x, axes=(0, 1), keep_dims=True))
    spread = hi - lo > 0.0
    scale = spread * (255.0 / dmath.max(hi - lo, 1.0)) + (spread ^ True) * 1.0
    out = _float(x) * scale + (0.0 - lo) * scale * spread
    return fn.cast(dmath.floor(dmath.clamp(out, 0.0, 255.0)), dtype=types.UINT8)


def equalize(x: DataNode, _: Value, ctx: OpContext) -> DataNode:
    """``ImageOps.equalize``, here DALI's per-channel histogram equalization (OpenCV's
    lookup table, not Pillow's: see docs/dali.md)."""
    return fn.equalize(x)


def invert(x: DataNode, _: Value, ctx: OpContext) -> DataNode:
    """``ImageOps.invert``."""
    return _u8(255) - x


def solarize(x: DataNode, threshold: Value, ctx: OpContext) -> DataNode:
    """``ImageOps.solarize``: values at or above the threshold are inverted."""
    keep = x < _scalar(threshold, types.INT32)
    return keep * x + (keep ^ True) * (_u8(255) - x)


def solarize_add(x: DataNode, add: Value, ctx: OpContext) -> DataNode:
    """timm's ``solarize_add``: ``min(255, v + add)`` for ``v < 128`` (add <= 128)."""
    low = x < _u8(128)
    return low * (x + _scalar(add, types.UINT8)) + (low ^ True) * x


#: Pillow's posterize mask ``~(2 ** (8 - bits) - 1)`` for 0..8 bits kept
_POSTERIZE_MASKS = [(~(2 ** (8 - b) - 1)) & 0xFF for b in range(9)]


def posterize(x: DataNode, bits: Value, ctx: OpContext) -> DataNode:
    """``ImageOps.posterize`` (timm returns the image unchanged at 8 bits or more)."""
    if _is_node(bits):
        kept = fn.cast(dmath.clamp(bits, 0, 8), dtype=types.INT32)
        mask = fn.lookup_table(kept, keys=list(range(9)), values=_POSTERIZE_MASKS,
                               dtype=types.UINT8, default_value=255)
    else:
        mask = _u8(_POSTERIZE_MASKS[min(max(int(bits), 0), 8)])
    return x & mask


def color(x: DataNode, factor: Value, ctx: OpContext) -> DataNode:
    """``ImageEnhance.Color``: blend with the grey (L) image."""
    return _blend(_float(_luma(x)), x, factor)


def contrast(x: DataNode, factor: Value, ctx: OpContext) -> DataNode:
    """``ImageEnhance.Contrast``: blend with the rounded mean grey level."""
    centre = dmath.floor(fn.reductions.mean(_float(_luma(x))) + 0.5)
    return _blend(centre, x, factor)


def brightness(x: DataNode, factor: Value, ctx: OpContext) -> DataNode:
    """``ImageEnhance.Brightness``: blend with black."""
    return _blend(0.0, x, factor)


#: ``ImageFilter.SMOOTH``: 3x3, centre 5, scale 13
_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float32) / 13.0


def sharpness(x: DataNode, factor: Value, ctx: OpContext) -> DataNode:
    """``ImageEnhance.Sharpness``: blend with ``ImageFilter.SMOOTH``, whose 1-pixel border is
    the image itself (Pillow filters the interior only)."""
    kernel = types.Constant(_SMOOTH, device=x.device)
    inner = fn.filter(x, kernel, mode="valid")  # (H-2, W-2, C)
    middle = fn.cat(x[1:-1, 0:1], inner, x[1:-1, -1:], axis=1)
    smooth = fn.cat(x[0:1], middle, x[-1:], axis=0)
    return _blend(_float(smooth), x, factor)


def rotate(x: DataNode, degrees: Value, ctx: OpContext) -> DataNode:
    """``Image.rotate(degrees, resample, fillcolor)``: anticlockwise about the centre, same
    size; Pillow's inverse matrix ``[cos, sin, c, -sin, cos, f]`` of ``-degrees``."""
    h, w = ctx.size
    cx, cy = w / 2.0, h / 2.0
    cos_part = (1.0, 0.0, -cx, 0.0, 1.0, -cy)
    sin_part = (0.0, 1.0, -cy, -1.0, 0.0, cx)
    offset = (0.0, 0.0, cx, 0.0, 0.0, cy)
    if _is_node(degrees):
        theta = fn.cast(degrees, dtype=types.FLOAT) * (-math.pi / 180.0)
        matrix = (_matrix(offset) + dmath.cos(theta) * _matrix(cos_part)
                  + dmath.sin(theta) * _matrix(sin_part))
    else:
        theta = -math.radians(degrees)
        c, s = round(math.cos(theta), 15), round(math.sin(theta), 15)
        matrix = [o + c * a + s * b for o, a, b in zip(offset, cos_part, sin_part, strict=True)]
    return _affine(x, matrix, ctx)


def shear_x(x: DataNode, factor: Value, ctx: OpContext) -> DataNode:
    """timm's ``shear_x``: ``AFFINE (1, factor, 0, 0, 1, 0)``."""
    return _affine(x, _coeffs((1, 0, 0, 0, 1, 0), (0, 1, 0, 0, 0, 0), factor), ctx)


def shear_y(x: DataNode, factor: Value, ctx: OpContext) -> DataNode:
    """timm's ``shear_y``: ``AFFINE (1, 0, 0, factor, 1, 0)``."""
    return _affine(x, _coeffs((1, 0, 0, 0, 1, 0), (0, 0, 0, 1, 0, 0), factor), ctx)


def translate_x_rel(x: DataNode, pct: Value, ctx: OpContext) -> DataNode:
    """timm's ``translate_x_rel``: ``AFFINE (1, 0, pct * width, 0, 1, 0)``."""
    width = ctx.size[1]
    return _affine(x, _coeffs((1, 0, 0, 0, 1, 0), (0, 0, width, 0, 0, 0), pct), ctx)


def translate_y_rel(x: DataNode, pct: Value, ctx: OpContext) -> DataNode:
    """timm's ``translate_y_rel``: ``AFFINE (1, 0, 0, 0, 1, pct * height)``."""
    height = ctx.size[0]
    return _affine(x, _coeffs((1, 0, 0, 0, 1, 0), (0, 0, 0, 0, 0, height), pct), ctx)


# --- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    """One of timm's ops: its level function (None: no argument) and its pixel function."""

    level: Callable[[Value, Value], Value] | None
    apply: Callable[[DataNode, Value, OpContext], DataNode]
    signed: bool = False  # the level is randomly negated (timm's ``_randomly_negate``)


#: timm's op names (``NAME_TO_OP`` / ``LEVEL_TO_ARG``) that the DALI path implements; the
#: translations use timm's default ``translate_pct`` hparam (0.45; only AugMix changes it)
OPS: dict[str, Op] = {
    "AutoContrast": Op(None, auto_contrast),
    "Equalize": Op(None, equalize),
    "Invert": Op(None, invert),
    "Rotate": Op(rotate_level, rotate, signed=True),
    "Posterize": Op(posterize_level, posterize),
    "PosterizeIncreasing": Op(posterize_increasing_level, posterize),
    "PosterizeOriginal": Op(posterize_original_level, posterize),
    "Solarize": Op(solarize_level, solarize),
    "SolarizeIncreasing": Op(solarize_increasing_level, solarize),
    "SolarizeAdd": Op(solarize_add_level, solarize_add),
    "Color": Op(enhance_level, color),
    "ColorIncreasing": Op(enhance_increasing_level, color, signed=True),
    "Contrast": Op(enhance_level, contrast),
    "ContrastIncreasing": Op(enhance_increasing_level, contrast, signed=True),
    "Brightness": Op(enhance_level, brightness),
    "BrightnessIncreasing": Op(enhance_increasing_level, brightness, signed=True),
    "Sharpness": Op(enhance_level, sharpness),
    "SharpnessIncreasing": Op(enhance_increasing_level, sharpness, signed=True),
    "ShearX": Op(shear_level, shear_x, signed=True),
    "ShearY": Op(shear_level, shear_y, signed=True),
    "TranslateXRel": Op(partial(translate_rel_level, pct=0.45), translate_x_rel, signed=True),
    "TranslateYRel": Op(partial(translate_rel_level, pct=0.45), translate_y_rel, signed=True),
}


def level_param(name: str, magnitude: Value, sign: Value = 1.0) -> Value:
    """The argument timm's op ``name`` gets at ``magnitude`` (and sign, for signed ops).

    Per-sample scalars are computed in float64 with timm's constants (:func:`_k`), as timm's
    Python floats are, so a level lands on the same side of every ``int()`` and a blend factor
    rounds to the same float32 as Pillow's.
    """
    op = OPS[name]
    if op.level is None:
        return None
    if _is_node(magnitude):
        magnitude = fn.cast(magnitude, dtype=types.FLOAT64)
    if _is_node(sign):
        sign = fn.cast(sign, dtype=types.FLOAT64)
    return op.level(magnitude, sign)


def apply_op(name: str, x: DataNode, magnitude: Value, sign: Value, ctx: OpContext) -> DataNode:
    """Apply timm's op ``name`` at ``magnitude`` (sign +1/-1 for the signed ops)."""
    return OPS[name].apply(x, level_param(name, magnitude, sign), ctx)

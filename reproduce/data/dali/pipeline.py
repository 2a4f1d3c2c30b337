"""The DALI graphs: DeiT's training transform and timm's evaluation transform.

Training, in timm's order (``timm.data.create_transform(is_training=True)``):
decode fused with the random-resized crop (``fn.decoders.image_random_crop``: nvJPEG on the GPU,
``device="mixed"``; libjpeg-turbo on the CPU), resize to ``img_size`` with the recipe's
interpolation, horizontal flip, RandAugment / AutoAugment (:mod:`.policies`), normalise with the
ImageNet mean and std to float CHW. Random erasing and Mixup/CutMix act later, on the batch.

Evaluation (``create_transform(is_training=False)``): resize the shorter side to
``floor(img_size / crop_pct)`` (the longer one as torchvision's ``Resize`` computes it), centre
crop ``img_size`` at torchvision's ``CenterCrop`` offsets, normalise.

Samples come in the order of a ``file_list`` (DALI's file reader, shuffling off), which the
loaders write from the sampler's indices. Decoding ignores EXIF orientation, as Pillow's
``Image.open`` in torchvision's ``ImageFolder`` does, and uses libjpeg's fancy upsampling of
chroma, as Pillow does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nvidia.dali.math as dmath
from nvidia.dali import fn, pipeline_def, types
from nvidia.dali.data_node import DataNode

from reproduce.data.dali.ops import OpContext
from reproduce.data.dali.policies import AugmentPolicy, augment

__all__ = ["TrainSpec", "EvalSpec", "train_pipeline", "eval_pipeline", "READER",
           "DALI_INTERP", "WARP_INTERP"]

READER = "Reader"

#: the recipe's interpolation for resizing (DALI's cubic is Catmull-Rom, as Pillow's bicubic)
DALI_INTERP = {"bicubic": types.INTERP_CUBIC, "bilinear": types.INTERP_LINEAR,
               "nearest": types.INTERP_NN}
#: for RandAugment's warps: DALI's warps have no cubic, bilinear stands in (docs/dali.md)
WARP_INTERP = {"bicubic": types.INTERP_LINEAR, "bilinear": types.INTERP_LINEAR,
               "nearest": types.INTERP_NN}


@dataclass(frozen=True)
class TrainSpec:
    """The recipe's training transform (see :func:`reproduce.data.dali.dali_loaders.train_spec`)."""

    img_size: int
    scale_min: float
    hflip: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    policy: AugmentPolicy | None  # RandAugment / AutoAugment, None: none
    fill: tuple[int, int, int]  # timm's img_mean for the augmentation warps


@dataclass(frozen=True)
class EvalSpec:
    """The recipe's evaluation transform."""

    img_size: int
    crop_pct: float
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def resize(self) -> int:
        """timm's ``scale_size = math.floor(img_size / crop_pct)``."""
        return math.floor(self.img_size / self.crop_pct)


def _decoder_args(gpu: bool, hw_decoder_load: float) -> dict[str, Any]:
    """Decoder settings shared by both graphs. On the GPU: nvJPEG ("mixed"), with the share of
    images sent to the hardware JPEG decoder (A100 / H100) and its buffers preallocated for
    ImageNet's largest image, as DALI's ImageNet example does
    (``docs/examples/use_cases/pytorch/resnet50/main.py``: ``preallocate_*_hint``)."""
    args: dict[str, Any] = {"device": "mixed" if gpu else "cpu", "output_type": types.RGB,
                            "adjust_orientation": False, "jpeg_fancy_upsampling": True}
    if gpu:
        args.update(hw_decoder_load=hw_decoder_load, preallocate_width_hint=5980,
                    preallocate_height_hint=6430)
    return args


def _read(file_list: Path, file_root: Path, pad: bool) -> tuple[DataNode, DataNode]:
    return fn.readers.file(file_list=str(file_list), file_root=str(file_root),
                           random_shuffle=False, pad_last_batch=pad, name=READER)


def _normalize(images: DataNode, mean: tuple[float, ...], std: tuple[float, ...]) -> DataNode:
    """timm's ``ToTensor`` + ``Normalize``: ``(v / 255 - mean) / std``, float CHW."""
    return fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                    mean=[255.0 * m for m in mean],
                                    std=[255.0 * s for s in std])


@pipeline_def(enable_conditionals=True)  # type: ignore[misc]
def _train_graph(file_list: Path, file_root: Path, spec: TrainSpec, gpu: bool,
                 hw_decoder_load: float) -> Any:
    jpegs, labels = _read(file_list, file_root, pad=False)
    images = fn.decoders.image_random_crop(
        jpegs, random_area=[spec.scale_min, 1.0], random_aspect_ratio=[3.0 / 4.0, 4.0 / 3.0],
        num_attempts=10, **_decoder_args(gpu, hw_decoder_load))
    images = fn.resize(images, resize_x=spec.img_size, resize_y=spec.img_size,
                       interp_type=DALI_INTERP[spec.interpolation], antialias=True)
    if spec.hflip > 0:
        images = fn.flip(images, horizontal=fn.random.coin_flip(probability=spec.hflip))
    if spec.policy is not None:
        ctx = OpContext(size=(spec.img_size, spec.img_size), fill=spec.fill,
                        interp=WARP_INTERP[spec.interpolation])
        images = augment(images, spec.policy, ctx)
    images = _normalize(images, spec.mean, spec.std)
    return images, labels.gpu() if gpu else labels


def _round_half_even(v: DataNode) -> DataNode:
    """Python's ``round`` of ``v / 2`` for a whole number ``v >= 0`` (torchvision's
    ``CenterCrop`` offsets)."""
    q = dmath.floor(v / 2.0)
    odd = v - 2.0 * q
    return q + odd * (q - 2.0 * dmath.floor(q / 2.0))


@pipeline_def  # type: ignore[misc]
def _eval_graph(file_list: Path, file_root: Path, spec: EvalSpec, gpu: bool,
                hw_decoder_load: float) -> Any:
    jpegs, labels = _read(file_list, file_root, pad=True)
    shape = fn.peek_image_shape(jpegs, adjust_orientation=False, dtype=types.FLOAT64)
    h, w = shape[0], shape[1]
    # torchvision's Resize(int): shorter side -> size, longer -> int(size * long / short)
    size = float(spec.resize)
    w_short = w <= h
    longer = dmath.floor(size * dmath.max(h, w) / dmath.min(h, w))
    new_w = w_short * size + (w_short ^ True) * longer
    new_h = w_short * longer + (w_short ^ True) * size
    images = fn.decoders.image(jpegs, **_decoder_args(gpu, hw_decoder_load))
    images = fn.resize(images, resize_x=fn.cast(new_w, dtype=types.FLOAT),
                       resize_y=fn.cast(new_h, dtype=types.FLOAT),
                       interp_type=DALI_INTERP[spec.interpolation], antialias=True)
    top = _round_half_even(new_h - spec.img_size)
    left = _round_half_even(new_w - spec.img_size)
    start = fn.cast(fn.stack(top, left), dtype=types.INT32)
    images = fn.slice(images, start=start, shape=[spec.img_size, spec.img_size],
                      axis_names="HW")
    images = _normalize(images, spec.mean, spec.std)
    return images, labels.gpu() if gpu else labels


def _pipeline_args(batch_size: int, num_threads: int, device_id: int | None, seed: int,
                   prefetch: int) -> dict[str, Any]:
    return {"batch_size": batch_size, "num_threads": max(1, num_threads),
            "device_id": device_id, "seed": seed, "prefetch_queue_depth": prefetch}


def train_pipeline(file_list: Path, file_root: Path, spec: TrainSpec, *, batch_size: int,
                   num_threads: int, device_id: int | None, seed: int, prefetch: int = 2,
                   hw_decoder_load: float = 0.65) -> Any:
    """A built training pipeline (GPU when ``device_id`` is a CUDA device index, else CPU)."""
    pipe = _train_graph(file_list, file_root, spec, device_id is not None, hw_decoder_load,
                        **_pipeline_args(batch_size, num_threads, device_id, seed, prefetch))
    pipe.build()
    return pipe


def eval_pipeline(file_list: Path, file_root: Path, spec: EvalSpec, *, batch_size: int,
                  num_threads: int, device_id: int | None, prefetch: int = 2,
                  hw_decoder_load: float = 0.65) -> Any:
    """A built evaluation pipeline (deterministic: no random operators)."""
    pipe = _eval_graph(file_list, file_root, spec, device_id is not None, hw_decoder_load,
                       **_pipeline_args(batch_size, num_threads, device_id, 0, prefetch))
    pipe.build()
    return pipe

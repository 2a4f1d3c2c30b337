"""Write an ImageNet-layout folder of real JPEGs: ``root/{train,val}/<class>/*.JPEG``.

For tests (a full-scale rehearsal needs thousands of varied-size JPEGs that decode like real
photos) and for benchmarks on a machine without a data set (``srv bench --jpeg-folder``). Images
are smooth class-dependent patterns plus texture noise, so a model can learn the classes and the
files compress like photographs: at the default ImageNet-like size (about 500x375) a file is
about 100 KB, as ImageNet's average JPEG is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["JpegFolderSpec", "write_jpeg_folder", "IMAGENET_LIKE_SIZES"]

#: (width, height) pairs around ImageNet's most common shapes (500x375 and its portrait twin)
IMAGENET_LIKE_SIZES: tuple[tuple[int, int], ...] = (
    (500, 375), (375, 500), (500, 333), (500, 400), (640, 480), (400, 300), (500, 500),
)


@dataclass(frozen=True)
class JpegFolderSpec:
    """What to write: classes, images per class and split, sizes, texture and JPEG quality."""

    classes: int = 10
    train_per_class: int = 100
    val_per_class: int = 20
    sizes: tuple[tuple[int, int], ...] = IMAGENET_LIKE_SIZES
    noise: float = 28.0  # std of the texture noise (0-255 scale): sets the file size
    quality: int = 90
    seed: int = 0


def _image(rng: np.random.Generator, cls: int, n_classes: int, w: int, h: int,
           noise: float) -> np.ndarray:
    """A class-dependent smooth pattern (hue and stripe orientation) with texture noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = np.pi * cls / max(n_classes, 1) + rng.normal(0, 0.15)
    freq = 2 * np.pi / (18 + 6 * (cls % 4) + rng.uniform(-3, 3))
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * freq + phase)
    hue = 2 * np.pi * cls / max(n_classes, 1)
    base = np.stack([np.cos(hue + k * 2 * np.pi / 3) for k in range(3)]) * 60 + 128
    img = base[None, None, :] + 50 * wave[..., None]
    # low-frequency blobs (an object-like region) and pixel texture
    coarse = rng.normal(0, 1, size=(h // 32 + 2, w // 32 + 2, 3)).astype(np.float32)
    coarse = np.kron(coarse, np.ones((32, 32, 1), np.float32))[:h, :w]
    img += 25 * coarse + rng.normal(0, noise, size=(h, w, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write_class(args: tuple[Path, JpegFolderSpec, str, int, int]) -> None:
    root, spec, split, per_class, c = args
    from PIL import Image

    # one generator per (split, class): the folder is the same however it is parallelised
    rng = np.random.default_rng([spec.seed, 0 if split == "train" else 1, c])
    folder = root / split / f"n{c:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
        w, h = spec.sizes[(i + c) % len(spec.sizes)]
        w = max(8, int(w * rng.uniform(0.9, 1.1)))
        h = max(8, int(h * rng.uniform(0.9, 1.1)))
        pixels = _image(rng, c, spec.classes, w, h, spec.noise)
        Image.fromarray(pixels).save(folder / f"{split}_{c}_{i:05d}.JPEG", quality=spec.quality)


def write_jpeg_folder(root: Path | str, spec: JpegFolderSpec = JpegFolderSpec(),
                      processes: int = 1) -> Path:
    """Write ``spec`` under ``root`` (classes ``n00000000``, ``n00000001``, ...); returns root.

    Deterministic for a given spec (whatever ``processes``). Sizes cycle through
    ``spec.sizes`` with a random jitter of up to 10%, so batches mix shapes as ImageNet does.
    """
    root = Path(root)
    jobs = [(root, spec, split, per_class, c)
            for split, per_class in (("train", spec.train_per_class), ("val", spec.val_per_class))
            for c in range(spec.classes)]
    if processes > 1:
        from multiprocessing import get_context

        with get_context("fork").Pool(processes) as pool:
            pool.map(_write_class, jobs)
    else:
        for job in jobs:
            _write_class(job)
    return root

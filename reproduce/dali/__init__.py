"""NVIDIA DALI input pipeline for ImageNet-layout folders (``loader = "dali"``): DeiT's data
augmentation with decoding and augmentation on the GPU (or DALI's CPU operators without one),
the timm path's sample order, exact sharded evaluation. See docs/dali.md.

Importing this package is cheap; DALI itself is imported when a loader is built.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..distributed import DistInfo
    from ..recipes import Recipe
    from .loaders import DaliTrainLoader, DaliValLoader

__all__ = ["available", "build_train_loader", "build_val_loader"]


@functools.cache
def available() -> bool:
    """DALI is importable (``pip install -e .[dali]``)."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def _require() -> None:
    if not available():
        from ..errors import SrvError

        raise SrvError("loader 'dali' needs NVIDIA DALI: pip install -e '.[dali]' "
                       "(nvidia-dali-cuda130), or use --set loader=timm")


def build_train_loader(root: Path, recipe: Recipe, info: DistInfo, **kwargs: Any
                       ) -> DaliTrainLoader:
    """DALI training batches of ``root/train`` for this rank (see :mod:`.loaders`)."""
    _require()
    from .loaders import build_train_loader as build

    return build(root, recipe, info, **kwargs)


def build_val_loader(root: Path, recipe: Recipe, info: DistInfo, **kwargs: Any
                     ) -> DaliValLoader:
    """DALI evaluation batches of this rank's shard of ``root/val``."""
    _require()
    from .loaders import build_val_loader as build

    return build(root, recipe, info, **kwargs)


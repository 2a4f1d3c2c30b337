"""NVIDIA DALI input pipeline for ImageNet-layout folders (``loader = "dali"``): DeiT's data
augmentation with decoding and augmentation on the GPU (or DALI's CPU operators without one),
the timm path's sample order, exact sharded evaluation. See docs/dali.md.

Importing this package is cheap; DALI itself is imported when a loader is built.
"""

from reproduce.data.dali.entry import available, build_train_loader, build_val_loader, require

__all__ = ["available", "build_train_loader", "build_val_loader", "require"]

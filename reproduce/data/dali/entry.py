"""Whether DALI is installed, the one-line error when it is not, and the loader builders that
import it only when a loader is built (re-exported by :mod:`reproduce.data.dali`)."""


from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reproduce.data.dali.dali_loaders import DaliTrainLoader, DaliValLoader
    from reproduce.recipes.recipe import Recipe
    from reproduce.utils.distributed import DistInfo

__all__ = ["available", "build_train_loader", "build_val_loader", "require"]


@functools.cache
def available() -> bool:
    """DALI is importable (``pip install -e .[dali]``)."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def require(user: str = "loader 'dali'", instead: str = "use --set loader=timm") -> None:
    """Raise the one-line error that names the extra to install when DALI is missing."""
    if not available():
        from reproduce.errors import SrvError

        raise SrvError(f"{user} needs NVIDIA DALI: pip install -e '.[dali]' "
                       f"(nvidia-dali-cuda130), or {instead}")


def build_train_loader(root: Path, recipe: Recipe, info: DistInfo, **kwargs: Any
                       ) -> DaliTrainLoader:
    """DALI training batches of ``root/train`` for this rank (see :mod:`.dali_loaders`)."""
    require()
    from reproduce.data.dali.dali_loaders import build_train_loader as build

    return build(root, recipe, info, **kwargs)


def build_val_loader(root: Path, recipe: Recipe, info: DistInfo, **kwargs: Any
                     ) -> DaliValLoader:
    """DALI evaluation batches of this rank's shard of ``root/val``."""
    require()
    from reproduce.data.dali.dali_loaders import build_val_loader as build

    return build(root, recipe, info, **kwargs)


"""Where srv's shipped files are: the recipes (and their grids) and the published numbers.

The repository keeps them at its top level, where a reader looks for them: ``recipes/*.toml``,
``recipes/grids/*.toml`` and ``tables/reference/*.csv``. A wheel ships the same folders inside
the package, as ``reproduce/_resources/recipes`` and ``reproduce/_resources/reference``
(``setup.py`` maps them with ``package_dir``), so ``pip install .`` (not editable) gives an
``srv`` that finds them from any working directory.

:func:`resource_dir` answers from a source checkout first (a clone, an editable install, or
``PYTHONPATH`` pointing at a clone: the folders beside the package, edited in place), else from
the installed package data. Outputs never go here: runs and tables are written under the
current directory (see :func:`reproduce.report.reference.tables_dir`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from reproduce.errors import SrvError

__all__ = ["Resource", "resource_dir", "source_root"]

Resource = Literal["recipes", "reference"]

_PACKAGE = Path(__file__).resolve().parent.parent  # reproduce/
#: where each resource lives in a checkout (relative to its root) and in the installed package
_IN_CHECKOUT: dict[str, tuple[str, ...]] = {"recipes": ("recipes",),
                                             "reference": ("tables", "reference")}
_IN_PACKAGE = _PACKAGE / "_resources"


def source_root() -> Path | None:
    """The root of the source checkout this package runs from, or None for an installed copy.

    A checkout is recognised by its ``pyproject.toml`` and ``recipes/`` beside the package."""
    root = _PACKAGE.parent
    if (root / "pyproject.toml").is_file() and (root / "recipes").is_dir():
        return root
    return None


def resource_dir(name: Resource) -> Path:
    """The folder of a shipped resource: ``recipes`` (grids in its ``grids/``) or
    ``reference`` (the published-number CSVs)."""
    root = source_root()
    if root is not None:
        in_checkout = root.joinpath(*_IN_CHECKOUT[name])
        if in_checkout.is_dir():
            return in_checkout
    packaged = _IN_PACKAGE / name
    if packaged.is_dir():
        return packaged
    raise SrvError(f"srv's {name} folder is missing from this installation ({packaged}): "
                   f"reinstall srv with 'pip install .' from a clone, or run from a clone")

"""Published numbers the project compares against: ``tables/reference/*.csv``.

Each CSV has a ``model`` column holding catalogue names (``vit-s-patch``, ``vitc-4gf``, ...), so a
table can join the "paper" numbers beside "ours", and a ``source`` column naming the paper and
table every row comes from. ``tables/reference/README.md`` documents each file and how to add the
numbers of Wang et al. 2022 (``wang2022.csv`` ships with a header only: the paper's numeric
tables were not available to us and are never invented).

``SRV_TABLES_DIR`` points every reader and writer at another ``tables`` directory (its
``reference/`` subfolder holds the CSVs)::

    from reproduce.reference import load_reference
    xiao = load_reference("xiao2021_complexity")   # a pandas.DataFrame
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SrvError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["ENV_TABLES_DIR", "load_reference", "reference_dir", "reference_names", "tables_dir"]

ENV_TABLES_DIR = "SRV_TABLES_DIR"
REQUIRED_COLUMNS = ("model", "source")


def tables_dir() -> Path:
    """The ``tables`` directory: ``$SRV_TABLES_DIR`` if set, else ``tables/`` at the root of the
    repository holding this package, else ``./tables`` (for an installed, non-editable copy)."""
    env = os.environ.get(ENV_TABLES_DIR)
    if env:
        return Path(env).expanduser()
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "tables").is_dir():
        return root / "tables"
    return Path.cwd() / "tables"


def reference_dir() -> Path:
    """The directory of the reference CSVs: ``tables_dir() / "reference"``."""
    return tables_dir() / "reference"


def reference_names() -> list[str]:
    """Names of the reference tables (CSV file stems), sorted."""
    directory = reference_dir()
    return sorted(p.stem for p in directory.glob("*.csv")) if directory.is_dir() else []


def load_reference(name: str) -> pd.DataFrame:
    """Load one reference table (``"deit"`` or ``"deit.csv"``) as a pandas DataFrame.

    Raises:
        SrvError: no such table (the message lists the available ones), or the file lacks the
            ``model`` / ``source`` columns.
    """
    import pandas as pd

    stem = name.removesuffix(".csv")
    path = reference_dir() / f"{stem}.csv"
    if not path.is_file():
        known = ", ".join(reference_names()) or "none"
        raise SrvError(f"no reference table {name!r} in {reference_dir()} (available: {known}); "
                       f"set {ENV_TABLES_DIR} to another tables directory if needed")
    df = pd.read_csv(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise SrvError(f"reference table {path} lacks the column(s) {', '.join(missing)}; every "
                       f"row needs a catalogue model name and the source it was taken from")
    return df

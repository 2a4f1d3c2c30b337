"""Published numbers the project compares against: ``tables/reference/*.csv``.

Each CSV has a ``model`` column holding catalogue names (``vit-s-patch``, ``vitc-4gf``, ...), so a
table can join the "paper" numbers beside "ours", and a ``source`` column naming the paper and
table every row comes from. ``tables/reference/README.md`` documents each file and how to add the
numbers of Wang et al. 2022 (``wang2022.csv`` ships with a header only: the paper's numeric
tables were not available to us and are never invented).

The CSVs ship with srv (the repository's ``tables/reference/``, package data in a wheel:
:mod:`reproduce.utils.resources`). A CSV in ``<tables>/reference/`` (``<tables>`` is
:func:`tables_dir`: ``$SRV_TABLES_DIR`` or ``./tables``) adds to them or replaces the shipped
file of the same name, so an installed srv takes the paper's numbers without editing the
installation::

    from reproduce.report.reference import load_reference
    xiao = load_reference("xiao2021_complexity")   # a pandas.DataFrame
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from reproduce.errors import SrvError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["ENV_TABLES_DIR", "load_reference", "reference_dir", "reference_names",
           "reference_path", "tables_dir"]

ENV_TABLES_DIR = "SRV_TABLES_DIR"
REQUIRED_COLUMNS = ("model", "source")


def tables_dir() -> Path:
    """Where tables and plots are written: ``$SRV_TABLES_DIR`` if set, else ``tables/`` in the
    current directory (as ``runs/``), wherever srv is installed."""
    env = os.environ.get(ENV_TABLES_DIR)
    return Path(env).expanduser() if env else Path.cwd() / "tables"


def reference_dir() -> Path:
    """The shipped reference CSVs (the checkout's ``tables/reference/`` or the package's)."""
    from reproduce.utils.resources import resource_dir

    return resource_dir("reference")


def _folders() -> list[Path]:
    """Where reference CSVs are looked up, first match wins: the user's, then the shipped."""
    mine = tables_dir() / "reference"
    shipped = reference_dir()
    same = mine.is_dir() and mine.resolve() == shipped.resolve()
    return [shipped] if same or not mine.is_dir() else [mine, shipped]


def reference_names() -> list[str]:
    """Names of the reference tables (CSV file stems), sorted."""
    return sorted({p.stem for folder in _folders() for p in folder.glob("*.csv")})


def reference_path(name: str) -> Path | None:
    """The CSV of reference table ``name`` (``"deit"`` or ``"deit.csv"``), or None."""
    stem = name.removesuffix(".csv")
    for folder in _folders():
        if (folder / f"{stem}.csv").is_file():
            return folder / f"{stem}.csv"
    return None


def load_reference(name: str) -> pd.DataFrame:
    """Load one reference table (``"deit"`` or ``"deit.csv"``) as a pandas DataFrame.

    Raises:
        SrvError: no such table (the message lists the available ones), or the file lacks the
            ``model`` / ``source`` columns.
    """
    import pandas as pd

    path = reference_path(name)
    if path is None:
        known = ", ".join(reference_names()) or "none"
        raise SrvError(f"no reference table {name!r} (available: {known}): add "
                       f"{tables_dir() / 'reference' / name.removesuffix('.csv')}.csv with "
                       f"'model' and 'source' columns")
    df = pd.read_csv(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise SrvError(f"reference table {path} lacks the column(s) {', '.join(missing)}; every "
                       f"row needs a catalogue model name and the source it was taken from")
    return df

"""Options several commands share (a module the CLI does not register: its name starts with _)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

#: where run directories live (``srv train``, ``ablate``, ``table``, ``analyze``)
RunsDirOpt = Annotated[Path, typer.Option(help="Where run directories live.", envvar="SRV_RUNS")]


def benchmark_folders() -> list[Path]:
    """Where srv bench figures (``*.json``) are looked up for a dry run's cost:
    ``benchmarks/`` under the tables folder in use, then the checkout's
    ``tables/benchmarks/``."""
    from reproduce.report.reference import tables_dir
    from reproduce.utils.resources import source_root

    folders = [tables_dir() / "benchmarks"]
    root = source_root()
    if root is not None:
        folders.append(root / "tables" / "benchmarks")
    return folders


#: the trackers of a run (the recipe key ``log``; ``srv train``, ``srv ablate``)
LogOpt = Annotated[str | None, typer.Option(
    "--log", help="Trackers, comma-separated: tensorboard (the default: event files in the run "
                  "folder), mlflow, wandb; none: no tracking. Default: the recipe's log key.")]

"""``srv export``: a runs folder's runs as run records (JSON Lines), the data every table and
verdict is rebuilt from (``srv table --records``, ``srv claims --records``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reproduce.commands._options import RunsDirOpt
from reproduce.errors import SrvError, handle_errors


@handle_errors
def export(
    grids: Annotated[list[str] | None, typer.Argument(
        help="Grid names (stem, lr, ...); default: every grid with a finished run.",
        show_default=False)] = None,
    preset: Annotated[list[str] | None, typer.Option(
        "--preset", help="Only these presets (repeatable); default: every preset with a "
                         "finished run.")] = None,
    runs_dir: RunsDirOpt = Path("runs"),
    out: Annotated[Path | None, typer.Option(
        help="The records folder: one <grid>-<preset>.jsonl per grid and preset, replaced "
             "whole. Default: <runs-dir>/records (a clone's shipped results/ only with --out "
             "results).")] = None,
    diversity: Annotated[bool, typer.Option(
        "--diversity/--no-diversity", help="Measure each finished run's effective rank after "
                                           "the last block, trained and untrained (the "
                                           "diversity claim; about a second per run).")] = True,
) -> None:
    """Write the runs of a runs folder as run records, one line per run and grid.

    Each line holds what identifies the run (grid, preset, the cell's axis labels, seed,
    config digest), its settings, status, final and best top-1, the per-epoch curve, the
    effective ranks, and the code (git commit, dirty or not) and device it ran on."""
    from reproduce.experiments.export import collect
    from reproduce.records import write_records

    if not runs_dir.is_dir():
        raise SrvError(f"no runs directory at {runs_dir}: give --runs-dir (or $SRV_RUNS) the "
                       "folder that srv ablate / srv train wrote its runs to")
    records = collect(runs_dir, grids or None, preset or None)
    if not records:
        raise SrvError(f"no finished run of {', '.join(grids) if grids else 'any grid'} in "
                       f"{runs_dir}: run srv ablate first (or give --runs-dir)")
    if diversity:
        from reproduce.analysis.diversity import with_eranks

        records = with_eranks(records, runs_dir)
    paths = write_records(out or runs_dir / "records", records)
    for path in paths:
        print(f"wrote {path} ({len(path.read_text().splitlines())} runs)")


def register(app: typer.Typer) -> None:
    app.command("export")(export)

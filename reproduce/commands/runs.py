"""``srv runs``: what is in a runs folder - which runs finished, diverged, failed or are running,
with their top-1, time and ETA."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from reproduce.commands._options import RunsDirOpt
from reproduce.errors import handle_errors


class Format(StrEnum):
    auto = "auto"
    md = "md"
    csv = "csv"
    json = "json"


@handle_errors
def runs(
    runs_dir: RunsDirOpt = Path("runs"),
    grid: Annotated[str | None, typer.Option(
        help="Only the runs of this grid (stem, or stem/mini for one preset), as srv ablate "
             "recorded them.")] = None,
    status: Annotated[str | None, typer.Option(
        help="Only runs with this status: running, completed, failed, diverged or "
             "interrupted (Ctrl-C: rerun its command to resume).")] = None,
    fmt: Annotated[Format, typer.Option(
        "--format", case_sensitive=False,
        help="auto: a rich table on a terminal, plain columns otherwise; md, csv or json.")
    ] = Format.auto,
) -> None:
    """List the runs under --runs-dir with their status, top-1, time and ETA.

    Columns: model, recipe, grid cell, status, epochs done / total, top-1 (final, or the last
    epoch's), training time and, for running ones, the ETA."""
    from collections import Counter

    from reproduce.experiments.overview import COLUMNS, collect_runs, render
    from reproduce.utils.console import is_terminal

    rows = collect_runs(runs_dir, grid=grid, status=status)
    counts = Counter(r.status for r in rows)
    total = f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    if fmt is not Format.auto:
        print(render(rows, fmt.value))
        return
    if not is_terminal():
        print(render(rows, "plain"))
        print(total)
        return
    from rich.console import Console
    from rich.table import Table

    colors = {"completed": "green", "diverged": "magenta", "failed": "red", "running": "cyan",
              "interrupted": "yellow"}
    table = Table(*COLUMNS, title=f"runs in {runs_dir}", caption=total)
    for r in rows:
        cells = r.cells()
        cells["status"] = f"[{colors[r.status]}]{r.status}[/]"
        table.add_row(*(cells[c] for c in COLUMNS))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("runs")(runs)

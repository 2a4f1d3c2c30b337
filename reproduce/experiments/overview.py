"""An overview of a runs folder: every run's model, recipe, grid cell, status, progress, top-1,
time and, for running ones, the time left (``srv runs``).

Everything comes from the files the engine writes (:mod:`reproduce.training.runs`) and, for the
grid cell, from ``<runs>/.grids/<grid>-<preset>.json``, which ``srv ablate`` writes when it
starts a grid (a run folder is named by its config's hash, so it cannot say which grids use it).
Statuses are the engine's: running, completed, failed, diverged; a run whose status says
running but whose process is gone (killed, node lost) is shown as failed, "stopped", and
resumes when its command is run again.
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError
from reproduce.training.runs import STATUSES, RunDir, atomic_write_json, read_json

__all__ = ["RunRow", "collect_runs", "write_grid_index", "render", "COLUMNS", "GRID_DIR"]

GRID_DIR = ".grids"
COLUMNS = ("run", "model", "recipe", "grid", "cell", "status", "epochs", "top1", "time", "eta")


@dataclass
class RunRow:
    """One run folder as ``srv runs`` lists it (times in seconds)."""

    run: str
    model: str
    recipe: str
    grid: str  # grid/preset of the grids that use this run ("" if none)
    cell: str  # the cell's axis values and seed
    status: str  # running | completed | failed | diverged
    epoch: int  # epochs done
    epochs: int  # epochs in all
    top1: float | None  # final val top-1 (completed), else the last epoch's
    train_time_s: float  # sum of the epochs' training time (metrics.jsonl time_s)
    eta_s: float | None  # running runs: time left at their recent pace
    reason: str | None
    path: str

    def cells(self) -> dict[str, str]:
        """The row as the text of :data:`COLUMNS`."""
        return {"run": self.run, "model": self.model, "recipe": self.recipe, "grid": self.grid,
                "cell": self.cell, "status": self.status,
                "epochs": f"{self.epoch}/{self.epochs}",
                "top1": "-" if self.top1 is None else f"{self.top1:.2f}",
                "time": duration(self.train_time_s),
                "eta": "-" if self.eta_s is None else duration(self.eta_s)}


def duration(seconds: float) -> str:
    """``42s``, ``7m05s``, ``3h12m``, ``2d04h``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def write_grid_index(root: Path, grid: str, preset: str, cells: dict[str, str]) -> None:
    """Record which run folders a grid's cells use (run name -> cell), merged with earlier
    launches of the same grid and preset (other ``--axis`` / ``--seeds`` choices)."""
    path = Path(root) / GRID_DIR / f"{grid}-{preset}.json"
    old = read_json(path) or {}
    atomic_write_json(path, {"grid": grid, "preset": preset,
                             "cells": {**old.get("cells", {}), **cells}})


def _grid_index(root: Path) -> dict[str, list[tuple[str, str]]]:
    """run name -> [(grid/preset, cell)] over every grid launched on this runs folder."""
    index: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((root / GRID_DIR).glob("*.json")):
        data = read_json(path) or {}
        label = f"{data.get('grid')}/{data.get('preset')}"
        for run, cell in (data.get("cells") or {}).items():
            index.setdefault(run, []).append((label, str(cell)))
    return index


def _timestamp(text: Any) -> float | None:
    try:
        return datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def _eta(run: RunDir, status: dict[str, Any], epochs: int, rows: list[dict[str, Any]],
         now: float) -> float | None:
    """Time left at the pace of this session (from env.json's start to the last finished
    epoch, evaluation included); before its first epoch, at the mean epoch time so far."""
    done = int(status.get("epoch") or 0)
    env = run.read_json("env.json") or {}
    started, updated = _timestamp(env.get("started")), _timestamp(status.get("updated"))
    since = done - int(env.get("resumed_from_epoch") or 0)
    if started is not None and updated is not None and since > 0:
        per_epoch = (updated - started) / since
        return max(per_epoch * (epochs - done) - (now - updated), 0.0)
    times = [r["time_s"] for r in rows if isinstance(r.get("time_s"), int | float)]
    return sum(times) / len(times) * (epochs - done) if times else None


def _status(status: dict[str, Any]) -> tuple[str, str | None]:
    """The run's status, with a "running" one whose process is gone shown as failed."""
    state, reason = status.get("status"), status.get("reason")
    if state == "running":
        from reproduce.experiments import process_alive

        if process_alive(status.get("pid"), status.get("host")) is False:
            return "failed", "stopped (its process is gone): run the same command to resume"
    return (state if state in STATUSES else "failed"), reason


def read_run(path: Path, index: dict[str, list[tuple[str, str]]],
             now: float | None = None) -> RunRow | None:
    """One run folder's row; None for a folder that is not a run (no config.json)."""
    run = RunDir(path)
    config = run.config()
    if config is None:
        return None
    status = run.status() or {"status": "running", "epoch": 0}
    result = run.result()
    rows = run.metrics()
    state, reason = _status(status)
    epochs = int(config.get("epochs") or 0)
    top1 = (result or {}).get("top1")
    if top1 is None and rows:
        top1 = rows[-1].get("val_top1")
    grids = index.get(path.name, [])
    eta = (_eta(run, status, epochs, rows, time.time() if now is None else now)
           if state == "running" else None)
    return RunRow(run=path.name, model=str(config.get("model", "?")),
                  recipe=str(config.get("recipe", "?")),
                  grid=", ".join(g for g, _ in grids), cell=", ".join(c for _, c in grids),
                  status=state, epoch=int(status.get("epoch") or 0), epochs=epochs, top1=top1,
                  train_time_s=float(sum(r.get("time_s") or 0.0 for r in rows)), eta_s=eta,
                  reason=reason, path=str(path))


def collect_runs(root: Path | str, grid: str | None = None,
                 status: str | None = None) -> list[RunRow]:
    """Every run under ``root`` (sorted by grid, then name), optionally only those of ``grid``
    (a grid name, or grid/preset) or with ``status``.

    Raises:
        SrvError: a missing folder, or one without any run.
    """
    root = Path(root)
    if not root.is_dir():
        raise SrvError(f"no runs folder at {root}: point --runs-dir (or $SRV_RUNS) at the folder "
                       f"srv train / srv ablate wrote")
    if status is not None and status not in STATUSES:
        raise SrvError(f"--status {status!r}: use one of {', '.join(STATUSES)}")
    index = _grid_index(root)
    found = [row for p in sorted(root.iterdir())
             if p.is_dir() and not p.name.startswith(".") and ".old-" not in p.name
             and (row := read_run(p, index)) is not None]
    if not found:
        raise SrvError(f"no runs in {root} (no run folder with a config.json): train one with "
                       f"srv train / srv ablate, or point --runs-dir at another folder")
    if grid is not None:
        known = {g for entries in index.values() for g, _ in entries}
        if not any(g == grid or g.split("/")[0] == grid for g in known):
            raise SrvError(f"no grid {grid!r} has run in {root}: grids there: "
                           f"{', '.join(sorted(known)) or 'none (srv ablate records them)'}")
        found = [r for r in found
                 if any(g == grid or g.split("/")[0] == grid for g in r.grid.split(", "))]
    if status is not None:
        found = [r for r in found if r.status == status]
    return sorted(found, key=lambda r: (r.grid == "", r.grid, r.cell, r.run))


def render(rows: list[RunRow], fmt: str) -> str:
    """The rows as ``md`` (a GitHub table), ``csv`` or ``json`` (every field), or ``plain``."""
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[*COLUMNS, "reason", "path"],
                                lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r.cells(), "eta": "" if r.eta_s is None else round(r.eta_s),
                             "time": round(r.train_time_s, 1), "reason": r.reason or "",
                             "path": r.path})
        return out.getvalue().rstrip("\n")
    from tabulate import tabulate

    table = [[r.cells()[c] for c in COLUMNS] for r in rows]
    return tabulate(table, headers=list(COLUMNS), tablefmt="github" if fmt == "md" else "plain",
                    disable_numparse=True)

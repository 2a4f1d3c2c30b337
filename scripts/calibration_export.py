"""Export a calibration runs folder as JSON lines: one line per run, its per-epoch top-1.

The format of ``docs/claims-calibration.jsonl`` (``tag``, ``stem``, ``seed``, ``status``,
``top1``, ``best``, ``curve``, ``t``), plus what tells the stability grids' runs apart: ``grid``,
its axis labels (``lr``, ``warmup``, ``opt``, ``epochs``, ...), ``tag`` = those labels joined
(``lr=0.002``) and ``run`` (the run folder; a run that is a cell of several grids is written
once for each). A run still training is written with ``status`` running and the epochs it has;
a run no grid names is skipped (and counted on stderr).

    python scripts/calibration_export.py /work/calib-out/runs \\
        --out docs/claims-calibration-stability.jsonl

The runs are matched by their run folder (``<model>-<config hash>``) to the cells of each grid at
its preset (``--grids lr:quick,...``: the calibration ran the quick presets' configurations with
its own seeds), so a run is exported only when its configuration is exactly a preset's; the
seeds are read from the runs themselves.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError

#: every grid of ``srv claims --run`` at the presets whose configurations the calibration ran
DEFAULT_GRIDS = ("stem:quick,stem:quick-linear,lr:quick,warmup:quick,optimizer:quick,"
                 "epochs:quick,lr-wd-edf:quick")


def _cells(grid_name: str, preset: str, seeds: list[int], runs: Path) -> list[Any]:
    """The grid's cells at these seeds, in grid order (axes in file order, seeds innermost)."""
    from reproduce.experiments import plan
    from reproduce.recipes.grids import load_grid

    return plan(load_grid(grid_name, preset=preset, seeds=seeds), runs)


def _record(run: Path, grid: str, cell: Any) -> dict[str, Any]:
    """One line: the run's labels, status, final / best top-1, per-epoch top-1 and wall time."""
    from reproduce.training.runs import RunDir, read_json

    status = (read_json(run / "status.json") or {}).get("status", "unknown")
    result = read_json(run / "result.json") or {}
    rows = [r for r in RunDir(run).metrics() if "val_top1" in r]
    curve = [float(r["val_top1"]) for r in sorted(rows, key=lambda r: r["epoch"])]
    labels = cell.label_dict
    rec: dict[str, Any] = {"grid": grid, "tag": " ".join(f"{k}={v}" for k, v in labels.items()
                                                         if k != "stem") or "-"}
    rec.update({"stem": labels.get("stem", cell.model.rsplit("-", 1)[-1])})
    rec.update({k: v for k, v in labels.items() if k != "stem"})
    rec.update({"seed": cell.seed, "status": status,
                "top1": result.get("top1", curve[-1] if curve else None),
                "best": result.get("best_top1", max(curve) if curve else None),
                "curve": curve, "t": result.get("wall_time_s")})
    return rec


def export(runs: Path, grids: list[tuple[str, str]]) -> tuple[list[dict[str, Any]], int]:
    """One record per (grid, run) for every run of ``runs`` that is a cell of a grid, in grid
    order; a run that is a cell of several grids (lr 1e-3 is also warmup 3, AdamW and the 8-epoch
    patchify cell) is written once per grid, so each grid's records are complete. Returns them
    and the number of runs no grid names."""
    from reproduce.training.runs import read_json

    if not runs.is_dir():
        raise SrvError(f"no runs folder at {runs}: give the folder the calibration trains into")
    configs = {p.parent.name: read_json(p) or {} for p in sorted(runs.glob("*/config.json"))}
    seeds = sorted({int(c["seed"]) for c in configs.values() if "seed" in c})
    records, seen = [], set()
    for grid, preset in grids:
        for state in _cells(grid, preset, seeds, runs):
            name = state.cfg.run_name
            if name in configs:
                seen.add(name)
                records.append({**_record(runs / name, grid, state.cell), "run": name})
    return records, len(configs) - len(seen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", type=Path, help="the calibration's runs folder")
    parser.add_argument("--grids", default=DEFAULT_GRIDS,
                        help="grid:preset pairs whose cells the runs are (comma-separated)")
    parser.add_argument("--out", type=Path, help="the .jsonl to write (default: stdout)")
    args = parser.parse_args(argv)
    try:
        pairs = [tuple(g.split(":", 1)) if ":" in g else (g, "quick")
                 for g in args.grids.split(",") if g]
        records, other = export(args.runs, pairs)  # type: ignore[arg-type]
    except SrvError as err:
        print(f"srv: error: {err}", file=sys.stderr)
        return 2
    text = "".join(json.dumps(r) + "\n" for r in records)
    if args.out is None:
        sys.stdout.write(text)
    else:
        from reproduce.utils.atomic import atomic_write_text

        atomic_write_text(args.out, text)
    print(f"{len(records)} runs exported ({sum(r['status'] == 'completed' for r in records)} "
          f"completed); {other} runs no grid names", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

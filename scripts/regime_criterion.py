"""Issue 28's regime criterion on a finished calibration (reproduce/report/regime.py): per
setting of the calibration grid, patchify's and the conv-stem's mean final top-1, the gap, the
conv-stem's error and the val images, whether it meets the criterion, and the cheapest setting
that does (the regime scale).

    python scripts/regime_criterion.py --runs-dir runs                # stem at regime-cal
    python scripts/regime_criterion.py --runs-dir runs --json regime.json

Exit status: 0 when a setting meets the criterion, 1 when none does (or runs are missing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reproduce.recipes.grids import load_grid  # noqa: E402
from reproduce.report.regime import (  # noqa: E402
    Verdict,
    _value,
    cheapest,
    judge,
    render,
    settings_of,
)


def evaluate_grid(grid: Any, runs_root: Path | str, stem_axis: str = "stem"
                  ) -> list[Verdict]:
    """The criterion on every setting of a calibration grid (e.g. ``stem`` at ``regime-cal``)
    from the runs under ``runs_root``: a setting is a combination of the non-stem axes."""
    from reproduce.experiments.cells import plan
    from reproduce.experiments.export import grid_records
    from reproduce.report.records import axis_column, frame
    from reproduce.training.builders import steps_per_epoch

    states = plan(grid, runs_root)
    df = frame(grid, grid_records(grid, runs_root, states))
    others = [a.name for a in grid.axes if a.name != stem_axis]
    rows = []
    for st, (_, row) in zip(states, df.iterrows(), strict=True):
        r = st.cfg.recipe
        rows.append({
            "setting": " ".join(f"{a}={row[axis_column(a)]}" for a in others) or "all",
            stem_axis: row[axis_column(stem_axis)],
            "cost": steps_per_epoch(r)[0] * r.batch_size * r.epochs,
            "status": row["status"], "top1": _value(row["top1"]),
            "n_val": _value(row["n_val"]), "num_classes": _value(row["num_classes"])})
    return [judge(s) for s in settings_of(rows, stem_axis)]





def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--grid", default="stem")
    parser.add_argument("--preset", default="regime-cal")
    parser.add_argument("--seeds", help="comma list (default: the preset's)")
    parser.add_argument("--json", type=Path, help="also write the verdicts here")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    grid = load_grid(args.grid, args.preset, seeds=seeds)
    verdicts = evaluate_grid(grid, args.runs_dir)
    print(f"grid {grid.name} ({grid.preset}), seeds {', '.join(map(str, grid.seeds))}, runs in "
          f"{args.runs_dir}")
    print(render(verdicts))
    best = cheapest(verdicts)
    if args.json:
        args.json.write_text(json.dumps({
            "grid": grid.name, "preset": grid.preset, "seeds": grid.seeds,
            "chosen": best.setting.label if best else None,
            "settings": [v.to_dict() for v in verdicts]}, indent=2) + "\n")
    return 0 if best else 1


if __name__ == "__main__":
    sys.exit(main())

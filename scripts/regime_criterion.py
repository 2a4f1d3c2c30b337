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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reproduce.recipes.grids import load_grid  # noqa: E402
from reproduce.report.regime import cheapest, evaluate_grid, render  # noqa: E402


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

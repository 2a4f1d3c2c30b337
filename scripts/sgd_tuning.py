"""Issue 28 (3)'s SGD tuning for stable-optimizer at the regime scale (reproduce/report/
sgd_tuning.py): each stem's top-1 by SGD lr on the calibration seeds, the tuned lr, and whether
the claim is testable against AdamW at the same scale and seeds.

    srv export optimizer --preset regime-cal --runs-dir RUNS --out results
    python scripts/sgd_tuning.py results/optimizer-regime-cal.jsonl \
        --adamw results/stem-regime-cal-2.jsonl

Exit status: 0 when every stem has a tuned lr and the claim is testable, 1 otherwise, 2 on
unreadable records.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reproduce.errors import SrvError  # noqa: E402
from reproduce.records import load_records  # noqa: E402
from reproduce.report.sgd_tuning import can_test, render, rows_of, tune  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sgd", type=Path, help="the SGD calibration's records (.jsonl)")
    parser.add_argument("--adamw", type=Path, help="AdamW records at the same scale (.jsonl)")
    args = parser.parse_args(argv)
    try:
        records = load_records(args.sgd)
        reference = load_records(args.adamw) if args.adamw else None
    except SrvError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seeds = {r.seed for r in records}
    tuned = tune(rows_of(records))
    adamw = None
    if reference is not None:
        ref: dict[str, list[float]] = {}
        for r in reference:
            if r.seed in seeds and r.result.status == "done" and r.result.top1 is not None:
                ref.setdefault(r.cell["stem"], []).append(r.result.top1)
        adamw = {stem: sum(v) / len(v) for stem, v in ref.items()}
    print(f"SGD calibration {args.sgd} (seeds {', '.join(map(str, sorted(seeds)))})")
    print(render(tuned, adamw))
    ok = all(t.lr is not None for t in tuned.values())
    if adamw is not None:
        ok = ok and can_test(tuned, adamw)[0]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

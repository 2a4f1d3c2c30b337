"""Declare an exploratory change to the regime design's files after confirmatory results
(reproduce/report/claims/preregistration.py; docs/claims.md, "Exploratory changes"): appends an
``[[amendment]]`` with each file's current content as git's blob id, so the pre-registration
check accepts exactly this content and fails again if the file changes later.

    python scripts/declare_amendment.py ID --follows COMMIT --reason "why" FILE...

List the id in docs/claims.md's "Exploratory changes" too (tests/test_preregistration.py checks).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reproduce.report.claims.preregistration import (  # noqa: E402
    AMENDMENTS,
    DESIGN_FILES,
    AmendmentsError,
    load_amendments,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("id")
    parser.add_argument("--follows", required=True, help="the results commit it comes after")
    parser.add_argument("--reason", required=True)
    parser.add_argument("--to", type=Path, default=ROOT / AMENDMENTS)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.files) - set(DESIGN_FILES))
    if unknown:
        print(f"error: not design files: {', '.join(unknown)}", file=sys.stderr)
        return 2
    try:
        declared = load_amendments(args.to)
    except AmendmentsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if any(a.id == args.id for a in declared):
        print(f"error: amendment {args.id} is declared already in {args.to}", file=sys.stderr)
        return 2
    blobs = {f: subprocess.run(["git", "hash-object", str(ROOT / f)], capture_output=True,
                               text=True, check=True).stdout.strip() for f in args.files}
    lines = ["", "[[amendment]]", f"id = {json.dumps(args.id)}",
             f"follows = {json.dumps(args.follows)}", f"reason = {json.dumps(args.reason)}",
             "[amendment.blobs]"] + [f"{json.dumps(f)} = {json.dumps(b)}"
                                     for f, b in blobs.items()]
    with args.to.open("a") as out:
        out.write("\n".join(lines) + "\n")
    print(f"declared {args.id} in {args.to}: {', '.join(args.files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

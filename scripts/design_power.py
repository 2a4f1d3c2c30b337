"""The power table behind the pre-registered design (docs/claims.md, "The design
(pre-registered)"): how many seeds per arm the main job needs.

For each n, draws n seeds per stem with replacement from the calibration's 8-epoch top-1
(``docs/claims-calibration.jsonl``, tag ``e8``, seeds 0-9), the diversity arms as normal at the
pilot's effective ranks (39.0 ± 0.5 vs 11.7 ± 0.5), runs the main job's five tests exactly as
``srv claims`` does (Welch with each arm's variance floored at the top-1 resolution h² / 12,
h = 100 / 360; the two-sided F test for the seed variance), Holm-adjusts them together and counts
how often each claim is supported (adjusted p < alpha, effect in the claimed direction).

    python scripts/design_power.py                  # n = 3, 4, 5; 20,000 draws
    python scripts/design_power.py --n 4 --draws 2000 --json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = ROOT / "docs" / "claims-calibration.jsonl"
RESOLUTION = 100 / 360  # one val image of digits' 360
#: (claim, arm a, arm b, expected sign of a - b); stable-seeds is the F test of conv vs patch
WELCH = (("accuracy", "conv", "patch", 1), ("bn", "conv", "conv-nobn", 1),
         ("relu", "conv", "conv-norelu", 1))
DIVERSITY = ((39.0, 0.5), (11.7, 0.5))  # the pilot's effective rank, conv vs patch
SHOWN = ("accuracy", "bn", "relu", "diversity")


def calibration(path: Path = CALIBRATION, tag: str = "e8") -> dict[str, np.ndarray]:
    """The calibration's final top-1 per stem at one schedule (``tag``)."""
    out: dict[str, list[float]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["tag"] == tag and row["status"] == "completed":
            out.setdefault(row["stem"], []).append(float(row["top1"]))
    return {k: np.array(v) for k, v in out.items()}


def _welch(a: np.ndarray, b: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise Welch p-values and differences (the variances floored as srv claims does)."""
    n_a, n_b = a.shape[1], b.shape[1]
    va = np.maximum(a.var(axis=1, ddof=1), floor) / n_a
    vb = np.maximum(b.var(axis=1, ddof=1), floor) / n_b
    diff = a.mean(axis=1) - b.mean(axis=1)
    df = (va + vb) ** 2 / (va**2 / (n_a - 1) + vb**2 / (n_b - 1))
    t = diff / np.sqrt(va + vb)
    return 2 * stats.t.sf(np.abs(t), df), diff


def _f_test(a: np.ndarray, b: np.ndarray, floor: float) -> np.ndarray:
    va = np.maximum(a.var(axis=1, ddof=1), floor)
    vb = np.maximum(b.var(axis=1, ddof=1), floor)
    cdf = stats.f.cdf(va / vb, a.shape[1] - 1, b.shape[1] - 1)
    return np.minimum(1.0, 2 * np.minimum(cdf, 1 - cdf))


def _holm(p: np.ndarray) -> np.ndarray:
    """Row-wise Holm-adjusted p-values (columns are the family's tests)."""
    m = p.shape[1]
    order = np.argsort(p, axis=1)
    ranked = np.take_along_axis(p, order, axis=1) * (m - np.arange(m))
    adjusted = np.minimum(1.0, np.maximum.accumulate(ranked, axis=1))
    out = np.empty_like(p)
    np.put_along_axis(out, order, adjusted, axis=1)
    return out


def power(n: int, draws: int = 20_000, alpha: float = 0.05, seed: int = 0,
          top1: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Each main claim's chance of a supported verdict with n seeds per arm, Holm over five."""
    rng = np.random.default_rng(seed)
    top1 = top1 if top1 is not None else calibration()
    floor = RESOLUTION**2 / 12
    sample = {stem: rng.choice(v, size=(draws, n), replace=True) for stem, v in top1.items()}
    pvalues, signs = [], []
    for _, a, b, want in WELCH:
        p, diff = _welch(sample[a], sample[b], floor)
        pvalues.append(p)
        signs.append(np.sign(diff) == want)
    pvalues.append(_f_test(sample["conv"], sample["patch"], floor))  # stable-seeds
    signs.append(np.ones(draws, dtype=bool))  # descriptive: not shown, but in the family
    (ma, sa), (mb, sb) = DIVERSITY
    p, diff = _welch(rng.normal(ma, sa, (draws, n)), rng.normal(mb, sb, (draws, n)), 0.0)
    pvalues.append(p)
    signs.append(diff > 0)
    adjusted = _holm(np.column_stack(pvalues))
    names = [c for c, *_ in WELCH] + ["stable-seeds", "diversity"]
    return {name: float(np.mean((adjusted[:, i] < alpha) & signs[i]))
            for i, name in enumerate(names) if name in SHOWN}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[3, 4, 5], help="seeds per arm")
    parser.add_argument("--draws", type=int, default=20_000)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object per n")
    args = parser.parse_args()
    if not args.json:
        print("| n per arm | " + " | ".join(SHOWN) + " |")
        print("|---" * (len(SHOWN) + 1) + "|")
    for n in args.n:
        row = power(n, args.draws, args.alpha, args.seed)
        if args.json:
            print(json.dumps({"n": n, **row}))
        else:
            print(f"| {n} | " + " | ".join(f"{row[c]:.2f}" for c in SHOWN) + " |")


if __name__ == "__main__":
    main()

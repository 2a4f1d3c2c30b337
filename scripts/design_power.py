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

The regime scale (issue 28; recipes/claims/wang2022-regime.toml): ``--regime RECORDS --setting
LABEL`` draws each stem's n seeds as normal at the calibration's mean and sd at that setting
(3 seeds each: resampling 3 values would understate the spread), Welch's test at the strictest
Holm step of the regime family (alpha / 9), and reports the accuracy claim's power and the
seed-variance F test's; the BN / ReLU arms were not calibrated, so their power is not claimed.

    python scripts/design_power.py --regime results/stem-regime-cal.jsonl \
        --setting "train=10000 epochs=5 batch=64"
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


def regime_calibration(path: Path, setting: str) -> dict[str, np.ndarray]:
    """Final top-1 per stem of the regime calibration's runs at one setting (its label, as
    ``scripts/regime_criterion.py`` prints it, e.g. ``train=10000 epochs=5 batch=64``)."""
    want = dict(part.split("=") for part in setting.split())
    out: dict[str, list[float]] = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if all(str(rec["cell"].get(k)) == v for k, v in want.items()) \
                and rec["result"]["status"] == "done":
            out.setdefault(rec["cell"]["stem"], []).append(float(rec["result"]["top1"]))
    return {k: np.array(v) for k, v in out.items()}


def regime_power(n: int, top1: dict[str, np.ndarray], draws: int = 20_000,
                 alpha: float = 0.05, family: int = 9, seed: int = 0,
                 resolution: float = 100 / 2000) -> dict[str, float]:
    """Power of the regime scale's accuracy claim (Welch, conv > patch) and seed-variance claim
    (F test, conv < patch) at n seeds per arm, each at alpha / family (Holm's strictest step)."""
    rng = np.random.default_rng(seed)
    floor = resolution**2 / 12
    arms = {s: rng.normal(v.mean(), max(v.std(ddof=1), resolution), (draws, n))
            for s, v in top1.items()}
    p, diff = _welch(arms["conv"], arms["patch"], floor)
    f = _f_test(arms["conv"], arms["patch"], floor)
    level = alpha / family
    sd_ratio = arms["conv"].std(axis=1, ddof=1) < arms["patch"].std(axis=1, ddof=1)
    return {"accuracy": float(np.mean((p < level) & (diff > 0))),
            "stable-seeds": float(np.mean((f < level) & sd_ratio))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[3, 4, 5], help="seeds per arm")
    parser.add_argument("--draws", type=int, default=20_000)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object per n")
    parser.add_argument("--regime", type=Path, help="the regime calibration's records")
    parser.add_argument("--setting", default="train=10000 epochs=5 batch=64")
    args = parser.parse_args()
    if args.regime is not None:
        top1 = regime_calibration(args.regime, args.setting)
        print(f"calibration at {args.setting}: " + ", ".join(
            f"{k} {v.mean():.2f} ± {v.std(ddof=1):.2f} (n = {len(v)})" for k, v in top1.items()))
        for n in args.n:
            row = regime_power(n, top1, args.draws, args.alpha, seed=args.seed)
            print(json.dumps({"n": n, **row}) if args.json else
                  f"n = {n}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()))
        return
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

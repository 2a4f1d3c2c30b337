"""Issue 28's criterion for the regime scale, fixed before the calibration runs: the scale where
the paper's regime holds (two trained models a few points apart: Xiao et al. report 1.0-2.4
points of top-1 error between ViT_C-4GF and ViT_P-4GF, docs/paper.md §3), not "one arm trains,
the other does not" (digits at the quick scale: patchify 42%, the conv-stem 90%).

A calibration setting (one value of each non-stem axis: train subset, epochs, batch) **meets** it
when, over its finished runs:

1. patchify's mean final top-1 is within :data:`PATCH_WITHIN` (5) points of the conv-stem's
   (both stems trained);
2. the conv-stem's mean top-1 error is at least :data:`CONV_MIN_ERROR` (3) points (off the
   ceiling);
3. every run evaluated at least :data:`MIN_VAL` (1,000) validation images;

and all its planned runs finished (a diverged run counts at chance, 100 / classes, as srv claims
counts it). Of the settings that meet it, the **cheapest** (training images per cell: updates per
epoch x batch x epochs, as ``srv ablate --dry-run`` counts them) is the regime scale; a tie goes to
the setting first in grid order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["PATCH_WITHIN", "CONV_MIN_ERROR", "MIN_VAL", "Setting", "Verdict", "judge",
           "cheapest", "settings_of", "render", "scored_top1"]

PATCH_WITHIN = 5.0  # points of top-1
CONV_MIN_ERROR = 3.0  # points of top-1 error
MIN_VAL = 1_000  # validation images per run


@dataclass(frozen=True)
class Setting:
    """One calibration setting: its label, cost and the final top-1 of each stem's runs."""

    label: str  # e.g. "train=5000 epochs=5 batch=64"
    cost: int  # training images per cell
    patch: tuple[float, ...]  # final top-1 (%) per finished seed
    conv: tuple[float, ...]
    n_val: int | None  # the fewest validation images of its runs (None: unknown)
    unfinished: int = 0  # planned runs not (yet) done or diverged


@dataclass(frozen=True)
class Verdict:
    """Whether a setting meets the criterion, with its numbers and the reasons it does not."""

    setting: Setting
    patch_mean: float | None
    conv_mean: float | None
    meets: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def gap(self) -> float | None:
        """The conv-stem's mean top-1 minus patchify's (points)."""
        if self.patch_mean is None or self.conv_mean is None:
            return None
        return self.conv_mean - self.patch_mean

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self.setting), "patch_mean": self.patch_mean,
                "conv_mean": self.conv_mean, "gap": self.gap, "meets": self.meets,
                "reasons": list(self.reasons)}


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def judge(s: Setting) -> Verdict:
    """The criterion on one setting (module docstring)."""
    patch, conv = _mean(s.patch), _mean(s.conv)
    reasons = []
    if s.unfinished:
        reasons.append(f"{s.unfinished} run(s) unfinished")
    if patch is None or conv is None:
        reasons.append("no finished run of " + " and ".join(
            name for name, v in (("patch", patch), ("conv", conv)) if v is None))
    else:
        if conv - patch > PATCH_WITHIN:
            reasons.append(f"patchify {conv - patch:.1f} points below the conv-stem "
                           f"(> {PATCH_WITHIN:g})")
        if 100.0 - conv < CONV_MIN_ERROR:
            reasons.append(f"conv-stem error {100.0 - conv:.1f} points (< {CONV_MIN_ERROR:g}: "
                           f"at the ceiling)")
    if s.n_val is None or s.n_val < MIN_VAL:
        reasons.append(f"{s.n_val if s.n_val is not None else 'unknown'} val images "
                       f"(< {MIN_VAL:,})")
    return Verdict(s, patch, conv, not reasons, tuple(reasons))


def cheapest(verdicts: Sequence[Verdict]) -> Verdict | None:
    """The setting that meets the criterion at the lowest cost (the first of equal ones)."""
    met = [v for v in verdicts if v.meets]
    return min(met, key=lambda v: v.setting.cost) if met else None


def scored_top1(row: Mapping[str, Any]) -> float | None:
    """One run's top-1 as the calibrations score it: a diverged run at chance (100 / classes,
    as ``srv claims`` counts it), a finished one at its top-1, None for one not (yet) done.
    ``row``: a mapping with ``status``, ``top1`` and optionally ``num_classes``."""
    if row["status"] == "diverged":
        return 100.0 / (row.get("num_classes") or 10)
    if row["status"] == "done" and row.get("top1") is not None:
        return float(row["top1"])
    return None


def settings_of(rows: Sequence[dict[str, Any]], stem_axis: str = "stem", patch: str = "patch",
                conv: str = "conv") -> list[Setting]:
    """Settings from one row per run: ``setting`` (label), ``stem`` (the stem axis's label),
    ``cost``, ``status`` (done | diverged | other), ``top1``, ``n_val``, ``num_classes``; in
    the order their labels first appear."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["setting"]), []).append(row)
    out = []
    for label, members in groups.items():
        values: dict[str, list[float]] = {patch: [], conv: []}
        n_vals, unfinished = [], 0
        for row in members:
            if row[stem_axis] not in values:
                continue
            score = scored_top1(row)
            if score is None:
                unfinished += 1
                continue
            values[row[stem_axis]].append(score)
            if row["status"] == "done" and row.get("n_val") is not None:
                n_vals.append(int(row["n_val"]))
        out.append(Setting(label, int(members[0]["cost"]), tuple(values[patch]),
                           tuple(values[conv]), min(n_vals) if n_vals else None, unfinished))
    return out


def _value(x: Any) -> Any:
    """A frame's cell with pandas' missing values (NaN) as None."""
    return None if x is None or x != x else x


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def render(verdicts: Sequence[Verdict]) -> str:
    """A plain-text table of the verdicts and the chosen setting."""
    lines = [f"criterion: patchify within {PATCH_WITHIN:g} points of the conv-stem, conv-stem "
             f"error >= {CONV_MIN_ERROR:g} points, >= {MIN_VAL:,} val images",
             f"{'setting':<34} {'images':>9} {'patch':>6} {'conv':>6} {'gap':>6} "
             f"{'n_val':>6}  verdict"]
    for v in verdicts:
        s = v.setting
        lines.append(f"{s.label:<34} {s.cost:>9,} {_num(v.patch_mean):>6} "
                     f"{_num(v.conv_mean):>6} {_num(v.gap):>6} {s.n_val or '-':>6}  "
                     + ("meets" if v.meets else "no: " + "; ".join(v.reasons)))
    best = cheapest(verdicts)
    lines.append(f"regime scale: {best.setting.label} ({best.setting.cost:,} training images "
                 f"per cell)" if best else "regime scale: no setting meets the criterion")
    return "\n".join(lines)

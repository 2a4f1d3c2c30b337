"""Issue 28 (3)'s SGD tuning for the stable-optimizer claim at the regime scale, fixed before the
calibration runs (``srv ablate optimizer --preset regime-cal``: SGD with momentum over Xiao et
al.'s lr range scaled to the batch, docs/paper.md §3, on calibration seed 300).

Untuned, SGD is a broken run, not an optimizer: at the quick scale lr 0.1 trained neither stem
(about 32% and 25%, chance 10%), so a spread over AdamW / SGD measured how far each stem sat above
an SGD floor. The rule here:

1. **Tuned lr, per stem**: the SGD setting with the highest mean final top-1 over the calibration
   seeds (a diverged run counts at chance, as ``srv claims`` counts it); a tie goes to the smaller
   lr. Any unfinished run of the stem blocks its choice. The range is Xiao et al.'s and is not
   widened: a best lr at its edge is flagged, not chased.
2. **Testable or not**: stable-optimizer compares AdamW with the tuned SGD on the confirmatory
   seeds only when each stem's tuned SGD keeps at least :data:`MIN_TRAINED` of its AdamW top-1
   above chance in the calibration (the claims files' ``min_trained``, 0.5); otherwise the claim is
   *not testable* at this scale (an arm near chance), decided here before any confirmatory run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from reproduce.report.regime import scored_top1

__all__ = ["MIN_TRAINED", "Tuned", "rows_of", "tune", "can_test", "render"]

MIN_TRAINED = 0.5  # share of AdamW's above-chance top-1 the tuned SGD must keep


@dataclass(frozen=True)
class Tuned:
    """One stem's SGD calibration: every lr's mean top-1, and the chosen lr (None: blocked)."""

    stem: str
    by_lr: dict[float, float]  # lr -> mean final top-1 (%) over the finished seeds
    lr: float | None  # the tuned lr (rule 1); None while a run is unfinished
    unfinished: int = 0

    @property
    def top1(self) -> float | None:
        """The tuned lr's mean top-1."""
        return None if self.lr is None else self.by_lr[self.lr]

    @property
    def at_edge(self) -> bool:
        """Whether the tuned lr is the smallest or largest one calibrated."""
        return self.lr is not None and self.lr in (min(self.by_lr), max(self.by_lr))


def rows_of(records: Iterable[Any]) -> list[dict[str, Any]]:
    """:func:`tune`'s rows from run records (``reproduce.records.RunRecord``) of a grid with a
    ``stem`` axis."""
    return [{"stem": r.cell["stem"], "lr": r.settings.lr, "status": r.result.status,
             "top1": r.result.top1, "num_classes": r.settings.num_classes} for r in records]


def tune(rows: Iterable[Mapping[str, Any]]) -> dict[str, Tuned]:
    """Rule 1 on one row per calibration run: ``stem``, ``lr``, ``status`` (done | diverged |
    other), ``top1`` and ``num_classes``; stems in the order they first appear."""
    scores: dict[str, dict[float, list[float]]] = {}
    unfinished: dict[str, int] = {}
    for row in rows:
        stem, lr = str(row["stem"]), float(row["lr"])
        per_lr = scores.setdefault(stem, {})
        unfinished.setdefault(stem, 0)
        score = scored_top1(row)
        if score is None:
            unfinished[stem] += 1
        else:
            per_lr.setdefault(lr, []).append(score)
    out = {}
    for stem, per_lr in scores.items():
        means = {lr: sum(v) / len(v) for lr, v in sorted(per_lr.items())}
        best = None
        if means and not unfinished[stem]:
            best = min(means, key=lambda lr: (-means[lr], lr))
        out[stem] = Tuned(stem, means, best, unfinished[stem])
    return out


def can_test(tuned: Mapping[str, Tuned], adamw: Mapping[str, float],
             num_classes: int = 10) -> tuple[bool, list[str]]:
    """Rule 2: whether stable-optimizer can be tested, and why not. ``adamw``: each stem's
    AdamW mean top-1 at the same scale and seeds."""
    chance = 100.0 / num_classes
    reasons = []
    for stem, t in tuned.items():
        if t.top1 is None:
            reasons.append(f"{stem}: {t.unfinished} SGD run(s) unfinished")
            continue
        if stem not in adamw:
            reasons.append(f"{stem}: no AdamW run to compare with")
            continue
        kept = (t.top1 - chance) / (adamw[stem] - chance)
        if kept < MIN_TRAINED:
            reasons.append(f"{stem}: tuned SGD keeps {kept:.0%} of AdamW's above-chance top-1 "
                           f"(< {MIN_TRAINED:.0%}: near chance)")
    return not reasons, reasons


def render(tuned: Mapping[str, Tuned], adamw: Mapping[str, float] | None = None,
           num_classes: int = 10) -> str:
    """A plain-text table: top-1 by stem and SGD lr, the tuned lr, and rule 2's outcome."""
    lrs = sorted({lr for t in tuned.values() for lr in t.by_lr})
    lines = [f"{'stem':<8} " + " ".join(f"{lr:>8g}" for lr in lrs) + "   tuned lr"
             + ("   AdamW" if adamw else "")]
    for stem, t in tuned.items():
        cells = " ".join(f"{t.by_lr[lr]:>8.2f}" if lr in t.by_lr else f"{'-':>8}" for lr in lrs)
        chosen = ("blocked" if t.lr is None
                  else f"{t.lr:g}" + (" (range edge)" if t.at_edge else ""))
        ref = f"   {adamw[stem]:.2f}" if adamw and stem in adamw else ""
        lines.append(f"{stem:<8} {cells}   {chosen}{ref}")
    if adamw is not None:
        ok, why = can_test(tuned, adamw, num_classes)
        lines.append("stable-optimizer: testable (each stem's tuned SGD keeps >= "
                     f"{MIN_TRAINED:.0%} of AdamW's above-chance top-1)" if ok
                     else "stable-optimizer: not testable: " + "; ".join(why))
    return "\n".join(lines)

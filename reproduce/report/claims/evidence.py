"""The evidence for a claim: a grid at a preset, its two arms and one value per seed.

Every preset of the claim's grid is searched (``srv ablate <grid> --preset P`` runs are told
apart by their config hash); among those with a test (2 or more values per arm) the claim's own
``preset`` comes first, then the one with the most finished seeds in its smaller arm; the others
are listed. A ``paired-edf`` claim takes one value per random draw (both arms' errors on the
draws both finished). A diverged run is a chance-level top-1 (difference, seed-variance, spread
and paired-edf claims), and the divergence rates are compared with Fisher's exact test. The
diversity claim measures each run's checkpoint (the effective rank after the last block).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reproduce.errors import SrvError
from reproduce.records.schema import ERANK_IMAGES
from reproduce.report.claims.spec import Claim
from reproduce.report.records import RecordIndex

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from reproduce.recipes.grids import Grid

__all__ = ["Evidence", "RecordIndex", "find_evidence", "hint", "measure_diversity", "per_draw"]


@dataclass
class Evidence:
    """What a claim was tested on: a grid at a preset, its two arms and their per-seed values."""

    grid: str
    preset: str
    a_name: str
    b_name: str
    values_a: list[float]
    values_b: list[float]
    seeds_a: list[int]
    seeds_b: list[int]
    runs_a: list[str] = field(default_factory=list)
    runs_b: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # other presets that have evidence
    commits: list[str] = field(default_factory=list)
    resolution: float = 0.0  # the metric's step: 100 / val images for a top-1
    diverged: tuple[int, int] = (0, 0)  # diverged runs per arm (counted at chance in the values)
    best_a: list[float] = field(default_factory=list)  # best-epoch top-1 per seed (descriptive)
    best_b: list[float] = field(default_factory=list)
    scale: str = ""  # e.g. "digits, 8 epochs": what a verdict is about
    #: the diversity claim's values of the same models untrained (same seeds, same images):
    #: descriptive, so that the effect of training is visible beside the test
    untrained_a: list[float] = field(default_factory=list)
    untrained_b: list[float] = field(default_factory=list)
    #: a spread claim's mean top-1 per setting of its axis, per arm (a setting that did not
    #: train makes the claim not testable: :attr:`~.spec.Claim.min_trained`)
    settings_a: dict[str, float] = field(default_factory=dict)
    settings_b: dict[str, float] = field(default_factory=dict)
    chance: float = 0.0  # top-1 (%) of a guess

    @property
    def n(self) -> tuple[int, int]:
        return len(self.values_a), len(self.values_b)

    def describe(self) -> str:
        na, nb = self.n
        seeds = sorted(set(self.seeds_a) | set(self.seeds_b))
        text = (f"{self.grid} / {self.preset}: {self.a_name} vs {self.b_name}; seeds "
                f"{_seed_text(seeds)} (n = {na} + {nb})")
        if self.others:
            text += "; also " + ", ".join(self.others)
        return text


def _seed_text(seeds: list[int]) -> str:
    if not seeds:
        return "none"
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _arm(grid: Grid, df: pd.DataFrame, sel: dict[str, str]) -> tuple[pd.DataFrame, str] | None:
    """The rows of one arm and its display name; None when this preset lacks a label. The
    axis names were checked against the grid by :func:`find_evidence`."""
    from reproduce.report.records import _match

    labels, names = [], []
    for axis_name, label in sel.items():
        axis = grid.axis(axis_name)
        if label in ("@first", "@last"):
            label = axis.labels[0 if label == "@first" else -1]
        if label not in axis.labels:
            return None
        labels.append(label)
        names.append(axis.show(label) if len(sel) == 1 else
                     f"{axis.title or axis_name} {axis.show(label)}")
    return df[_match(df, list(sel), labels)], ", ".join(names)


def _chance(sub: pd.DataFrame) -> float:
    """Top-1 (%) of a guess: what a diverged run is worth on a spread."""
    from reproduce.report.records import _num_classes

    return 100.0 / _num_classes(sub.iloc[0]) if len(sub) else 0.0


def _per_seed(claim: Claim, grid: Grid, rows: pd.DataFrame) -> tuple[list[float], list[int],
                                                                     list[str]]:
    """One value per seed for the claim's statistic (the diversity is measured later). A
    diverged run counts as a chance-level top-1 in a difference or seed-variance claim, as on a
    spread: dropping it would make an arm that diverges look more accurate and more repeatable
    (survivorship)."""
    if claim.statistic in ("difference", "seed-variance"):
        ok = rows[rows["status"].isin(["done", "diverged"])].sort_values("seed")
        chance = _chance(rows)
        values = [float(r[claim.metric]) if r["status"] == "done" else chance
                  for _, r in ok.iterrows()]
        keep = [i for i, v in enumerate(values) if v == v]  # a finished run without the metric
        return ([values[i] for i in keep], [int(ok["seed"].iloc[i]) for i in keep],
                [str(ok["run"].iloc[i]) for i in keep])
    if claim.statistic == "diversity":  # measured on each finished run's checkpoint
        done = rows[rows["status"] == "done"].dropna(subset=[claim.metric]).sort_values("seed")
        return ([float(v) for v in done[claim.metric]], [int(s) for s in done["seed"]],
                list(done["run"]))
    # spread: every value of the axis finished (or diverged) for the seed
    from reproduce.report.records import axis_column

    col = axis_column(claim.axis or "")  # the axis was checked by find_evidence
    width = len(grid.axis(claim.axis or "").labels)
    chance = _chance(rows)
    values, seeds, runs = [], [], []
    for seed, sub in rows.groupby("seed"):
        ok = sub[sub["status"].isin(["done", "diverged"])]
        if len(ok) < width or ok[col].nunique() < width:
            continue
        accs = [float(r[claim.metric]) if r["status"] == "done" else chance
                for _, r in ok.iterrows()]
        if any(a != a for a in accs):
            continue
        if claim.link == "logit":
            accs = [logit_top1(a, ok["n_val"].max()) for a in accs]
        values.append(max(accs) - min(accs))
        seeds.append(int(seed))
        runs += list(ok["run"])
    return values, seeds, runs


def logit_top1(top1: float, n_val: float | None) -> float:
    """logit of a top-1 (%), clipped half a val image inside 0 and 100 (a perfect or a zero
    top-1 has no finite logit): the link of a spread claim with ``link = "logit"``."""
    import math

    half = 0.5 / float(n_val) if n_val and n_val == n_val else 1e-3
    p = min(max(top1 / 100.0, half), 1.0 - half)
    return math.log(p / (1.0 - p))


def setting_means(claim: Claim, rows: pd.DataFrame, chance: float) -> dict[str, float]:
    """One arm's mean top-1 per setting of a spread claim's axis (a diverged run at chance)."""
    from reproduce.report.records import axis_column

    col = axis_column(claim.axis or "")
    out: dict[str, list[float]] = {}
    for _, r in rows[rows["status"].isin(["done", "diverged"])].iterrows():
        top1 = float(r[claim.metric]) if r["status"] == "done" else chance
        if top1 == top1:
            out.setdefault(str(r[col]), []).append(top1)
    return {k: sum(v) / len(v) for k, v in out.items()}


def per_draw(rows: pd.DataFrame, column: str, metric: str, chance: float
             ) -> dict[tuple[str, int], tuple[float, str]]:
    """``(draw label, seed) -> (top-1 error, run)`` of one arm's finished or diverged runs (a
    diverged run: the chance-level error ``100 - chance``)."""
    out = {}
    for _, r in rows[rows["status"].isin(["done", "diverged"])].iterrows():
        top1 = float(r[metric]) if r["status"] == "done" else chance
        if top1 == top1:
            out[(str(r[column]), int(r["seed"]))] = (100.0 - top1, str(r["run"]))
    return out


def _paired(claim: Claim, rows_a: pd.DataFrame, rows_b: pd.DataFrame) -> tuple[list[Any], ...]:
    """Both arms' top-1 errors on the draws (draw label, seed) both finished, in draw order
    (:func:`~reproduce.report.stats.paired_draws` tests them); the seeds list one entry per
    draw."""
    from reproduce.report.records import axis_column

    col, chance = axis_column(claim.axis or ""), _chance(rows_a)
    a, b = (per_draw(rows, col, claim.metric, chance) for rows in (rows_a, rows_b))
    keys = sorted(set(a) & set(b))
    return ([a[k][0] for k in keys], [k[1] for k in keys], [a[k][1] for k in keys],
            [b[k][0] for k in keys], [k[1] for k in keys], [b[k][1] for k in keys])


def find_evidence(claim: Claim, index: RecordIndex, presets: list[str] | None,
                   force: bool, exclude: frozenset[str] = frozenset()
                   ) -> tuple[Evidence | None, str]:
    """The evidence over the grid's presets (``presets``: only these; ``exclude``: never these,
    another scale's): testable first, then the claim's own preset, then the most seeds in the
    smaller arm. A calibration preset (``calibration = true``) is never evidence: its runs
    chose the scale (nor are they another preset's records: ``srv export`` keeps a calibration
    seed out of every preset that shares its cell, and a runs folder is read through it)."""
    from reproduce.recipes.grids import load_grid
    from reproduce.report.records import check_consistent

    grid0 = load_grid(claim.grid)
    names = {a.name for a in grid0.axes}
    for axis_name in [*claim.a, *claim.b, *([claim.axis] if claim.axis else [])]:
        if axis_name not in names:
            raise SrvError(f"claim {claim.id!r}: grid {grid0.name!r} has no axis {axis_name!r} "
                           f"(its axes: {', '.join(sorted(names))}); fix the claims file")
    candidates = []
    for preset in grid0.presets:
        if (presets and preset not in presets) or preset in exclude:
            continue
        found = index.frame(claim.grid, preset)
        if found is None or found[0].calibration:  # a calibration's runs chose the scale
            continue
        grid, df = found
        arm_a, arm_b = _arm(grid, df, claim.a), _arm(grid, df, claim.b)
        if arm_a is None or arm_b is None:
            continue
        (rows_a, name_a), (rows_b, name_b) = arm_a, arm_b
        if claim.statistic == "paired-edf":
            va, sa, ra, vb, sb, rb = _paired(claim, rows_a, rows_b)
        else:
            va, sa, ra = _per_seed(claim, grid, rows_a)
            vb, sb, rb = _per_seed(claim, grid, rows_b)
        if not va and not vb:
            continue
        both = df.loc[rows_a.index.union(rows_b.index)]
        check_consistent(both, f"{claim.grid} ({preset}) for claim {claim.id}", force)
        ev = Evidence(claim.grid, preset, name_a, name_b, va, vb, sa, sb, ra, rb)
        ev.commits = sorted({str(c)[:7] for c in both["git_commit"].dropna()})
        n_val = both["n_val"].dropna()
        ev.resolution = 100.0 / float(n_val.max()) if len(n_val) else 0.0
        epochs = " / ".join(str(e) for e in sorted({int(e) for e in both["epochs"].dropna()}))
        ev.scale = f"{' / '.join(sorted({str(d) for d in both['dataset'].dropna()}))}, " \
                   f"{epochs} epochs"
        ev.chance = _chance(rows_a)
        if claim.statistic in ("difference", "seed-variance"):
            ev.diverged = _divergences(claim, rows_a, rows_b, ev)
        if claim.statistic == "spread":
            ev.settings_a = setting_means(claim, rows_a, ev.chance)
            ev.settings_b = setting_means(claim, rows_b, ev.chance)
            if claim.link == "logit":
                ev.resolution = 0.0  # a logit has no grid of its own: no variance floor
        if claim.statistic == "difference" and claim.metric == "top1":
            ev.best_a, ev.best_b = (_best(rows, runs) for rows, runs in ((rows_a, ra),
                                                                          (rows_b, rb)))
        default = preset == grid0.default_preset
        # testable first, then the claim's own (pre-registered) preset, then the most seeds
        candidates.append(((min(ev.n) >= 2, preset == claim.preset, min(ev.n), sum(ev.n),
                            default), ev))
    if not candidates:
        return None, f"no finished runs of both arms; run: {hint(claim)}"
    candidates.sort(key=lambda c: c[0], reverse=True)
    best = candidates[0][1]
    best.others = [f"{ev.preset} (n = {ev.n[0]} + {ev.n[1]})" for _, ev in candidates[1:]]
    return best, ""


def _divergences(claim: Claim, rows_a: pd.DataFrame, rows_b: pd.DataFrame,
                 ev: Evidence) -> tuple[int, int]:
    """Diverged runs per arm; when any, a note with both rates and Fisher's exact test."""
    from reproduce.report import stats

    div = [int((r["status"] == "diverged").sum()) for r in (rows_a, rows_b)]
    if any(div):
        na, nb = ev.n
        p = stats.fisher(div[0], na, div[1], nb)
        ev.notes.append(f"diverged {div[0]}/{na} vs {div[1]}/{nb} (counted as chance-level "
                        f"top-1), Fisher exact p {'< 0.001' if p < 0.001 else f'= {p:.3f}'}")
    return div[0], div[1]


def _best(rows: pd.DataFrame, runs: list[str]) -> list[float]:
    """Best-epoch top-1 of the arm's finished runs (the paper reports peak accuracy; reported
    beside the final-epoch value, not tested)."""
    done = rows[rows["run"].isin(runs) & (rows["status"] == "done")]
    return [float(v) for v in done["best_top1"].dropna()]


def hint(claim: Claim) -> str:
    """The ``srv ablate`` command that makes a claim's evidence: the claim's own preset (which
    ``srv claims --run`` trains), else the quick preset when it has both arms (the README's main
    job), else the grid's default preset, with the claims file's [design] seeds."""
    from reproduce.recipes.design import design_seeds, seeds_arg
    from reproduce.recipes.grids import load_grid

    if claim.preset:
        scale = f" --scale {claim.scale}" if claim.scale not in ("", "quick") else ""
        return f"srv ablate {claim.grid} --preset {claim.preset} (or srv claims --run{scale})"
    grid0 = load_grid(claim.grid)
    for preset in ("quick", grid0.default_preset):
        if preset not in grid0.presets:
            continue
        grid = load_grid(claim.grid, preset=preset)
        labels = {a.name: a.labels for a in grid.axes}
        if all(v.startswith("@") or v in labels.get(k, []) for arm in (claim.a, claim.b)
               for k, v in arm.items()):
            seeds = "" if preset == "quick" else f" --seeds {seeds_arg(design_seeds())}"
            return f"srv ablate {claim.grid} --preset {preset}{seeds}"
    return f"srv ablate {claim.grid} --seeds {seeds_arg(design_seeds())}"


def measure_diversity(claim: Claim, ev: Evidence, index: RecordIndex) -> None:
    """Replace the evidence's values by each run's effective rank after the last block, as its
    record holds it (measured on its checkpoint by ``srv export`` / ``srv claims``:
    :func:`reproduce.analysis.diversity.with_eranks`), with the same model untrained beside it."""
    found = index.frame(claim.grid, ev.preset)
    assert found is not None  # find_evidence found this preset
    _, df = found
    va: list[float] = []
    vb: list[float] = []
    sa: list[int] = []
    sb: list[int] = []
    ua: list[float] = []
    ub: list[float] = []
    for _, row in df.sort_values("seed").iterrows():
        value = row.get("erank")
        if value is None or value != value:
            continue
        if row["run"] in ev.runs_a:
            va.append(float(value))
            sa.append(int(row["seed"]))
            ua.append(float(row["erank_untrained"]))
        elif row["run"] in ev.runs_b:
            vb.append(float(value))
            sb.append(int(row["seed"]))
            ub.append(float(row["erank_untrained"]))
    ev.values_a, ev.values_b, ev.seeds_a, ev.seeds_b = va, vb, sa, sb
    ev.untrained_a, ev.untrained_b = ua, ub
    ev.notes.append(f"after the last block, {ERANK_IMAGES} val images")

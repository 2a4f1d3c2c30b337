"""The statistics columns of a grid's table: per cell the t-interval of the mean, and against a
baseline row Welch's difference with its interval, p and Holm-adjusted p, plus the divergence
rate with its Wilson interval (the tests themselves: :mod:`reproduce.report.stats`).

A one-dimensional table carries them as extra columns (:func:`_stat_entries`); a two-dimensional
one gets a separate Statistics table in long format (:func:`_stats_table`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reproduce.errors import SrvError
from reproduce.recipes.grids import Grid
from reproduce.report.records import _axis_header, _match, _ordered
from reproduce.report.render import Entry, Table
from reproduce.report.stats import fmt_p

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["AUTO", "CellStats", "metric_values", "baseline_label", "cell_stats", "fmt_p"]

#: the baseline row of the comparisons chosen by the grid: its first row (see baseline_label)
AUTO = "auto"


@dataclass
class CellStats:
    """The statistics of one table cell (a row, or a row x column combination)."""

    key: tuple[str, ...]  # row-axis labels, then column-axis labels
    values: list[float]  # the metric of the finished seeds
    interval: Any  # reproduce.report.stats.Interval | None
    diverged: int  # diverged runs
    started: int  # finished + diverged runs
    baseline: tuple[str, ...] | None = None  # the key compared against (None: not compared)
    diff: Any = None  # reproduce.report.stats.Difference | None
    p_holm: float | None = None

    @property
    def n(self) -> int:
        return len(self.values)


def metric_values(sub: pd.DataFrame, metric: str) -> list[float]:
    """The metric of the finished runs of ``sub``, one value per seed: a diverged run counts as
    a chance-level top-1 (the claims' rule, docs/claims.md: dropping it would make an arm that
    diverges look more accurate and more repeatable); other metrics leave it out."""
    values = []
    for _, row in sub.iterrows():
        if row["status"] == "done" and row[metric] == row[metric] and row[metric] is not None:
            values.append(float(row[metric]))
        elif row["status"] == "diverged" and metric.endswith("top1"):
            values.append(chance_top1(row))
    return values


def chance_top1(row: pd.Series) -> float:
    """Top-1 (%) of a guess among the run's classes: what a diverged run is worth."""
    from reproduce.report.records import _num_classes

    return 100.0 / _num_classes(row)


def baseline_label(grid: Grid, rows_ax: list[str], baseline: str | None) -> str | None:
    """The label of the first row axis to compare every other row with (see build_table)."""
    if baseline is None or baseline in ("", "none"):
        return None
    axis = grid.axis(rows_ax[0])
    if baseline == AUTO:
        return axis.labels[0] if len(axis.labels) > 1 else None
    for label in axis.labels:
        if baseline in (label, axis.show(label)):
            return label
    raise SrvError(f"--baseline {baseline!r} is not a row of table {grid.name!r}; choose from "
                   f"{', '.join(axis.labels)} (or none)")


def cell_stats(grid: Grid, df: pd.DataFrame, rows_ax: list[str], cols_ax: list[str],
               metric: str, baseline: str | None) -> list[CellStats]:
    """Per cell: mean with its t-interval, the divergence count, and (unless it is the baseline)
    Welch's test against the baseline row with the same other labels; p-values Holm-adjusted
    over every comparison of the table."""
    from reproduce.report import stats

    axes = rows_ax + cols_ax
    out: list[CellStats] = []
    for row in _ordered(grid, rows_ax):
        for col in _ordered(grid, cols_ax):
            key = tuple(row) + tuple(col)
            sub = df[_match(df, axes, key)]
            values = metric_values(sub, metric)
            div = int((sub["status"] == "diverged").sum())
            bounds = (0.0, 100.0) if metric.endswith("top1") else None
            started = int((sub["status"] == "done").sum()) + div
            out.append(CellStats(key, values, stats.mean_interval(values, bounds=bounds), div,
                                 started))
    base = baseline_label(grid, rows_ax, baseline)
    n_val = df["n_val"].dropna() if "n_val" in df else []
    resolution = 100.0 / float(n_val.max()) if len(n_val) and metric.endswith("top1") else 0.0
    if base is not None:
        by_key = {cs.key: cs for cs in out}
        for cs in out:
            if cs.key[0] == base:
                continue
            ref = by_key.get((base, *cs.key[1:]))
            if ref is None:
                continue
            cs.baseline = ref.key
            cs.diff = stats.welch(cs.values, ref.values, resolution=resolution)
        tested = [cs for cs in out if cs.diff is not None]
        for cs, p in zip(tested, stats.holm([cs.diff.p for cs in tested]), strict=True):
            cs.p_holm = p
    return out


def _stat_header(base_name: str | None, any_div: bool) -> list[str]:
    """The headers of :func:`_stat_entries`' columns."""
    return (["95% CI"] + ([f"Δ vs {base_name} [95% CI]", "p", "Holm p"] if base_name else [])
            + (["diverged"] if any_div else []))


def _stat_entries(cs: Any, base_name: str | None, any_div: bool) -> list[Entry]:
    """A cell's statistics columns: its interval, then (against the baseline) the difference,
    p and Holm p, then the divergence rate when any run diverged."""
    out = [Entry(text=_ci_text(cs.interval))]
    if base_name is not None:
        out += [Entry(text=_diff_text(cs)),
                Entry(text=fmt_p(cs.diff.p if cs.diff else None)),
                Entry(text=fmt_p(cs.p_holm))]
    if any_div:
        out.append(Entry(text=_div_text(cs)))
    return out


def _ci_text(interval: Any) -> str:
    if interval is None:
        return "—"
    if not interval.has_interval:
        return "n=1: none"
    return f"[{interval.low:.1f}, {interval.high:.1f}]"


def _diff_text(cs: CellStats) -> str:
    if cs.baseline is None:
        return "reference" if cs.values or cs.started else "—"
    if cs.diff is None:
        return "n<2: no test"
    d = cs.diff
    return f"{d.diff:+.1f} [{d.low:.1f}, {d.high:.1f}]"


def _div_text(cs: CellStats) -> str:
    from reproduce.report import stats

    if not cs.started:
        return "—"
    lo, hi = stats.wilson(cs.diverged, cs.started)
    return f"{cs.diverged}/{cs.started} [{100 * lo:.0f}, {100 * hi:.0f}]%"


def _stats_notes(base_name: str | None, n_tests: int, any_div: bool) -> list[str]:
    notes = ["95% CI: Student-t interval of the mean over the n finished seeds (a diverged run "
             "counts as chance-level top-1, as in srv claims), clipped to [0, 100]; n=1: no "
             "interval exists (no variance estimate), none is shown."]
    if base_name is not None:
        family = (f"Holm-adjusted over the {n_tests} comparison{'s' if n_tests != 1 else ''} "
                  f"of this table" if n_tests else "no comparison has 2 finished seeds in both "
                  "arms yet (n<2: no test)")
        notes.append(f"Δ vs {base_name}: difference of means with Welch's 95% interval; p: "
                     f"Welch's two-sided t-test (each arm's variance floored at the resolution "
                     f"of top-1, h² / 12, h = 100 / val images); Holm p: {family}.")
    if any_div:
        notes.append("diverged: diverged / started runs with the Wilson 95% interval.")
    return notes


def _stats_table(grid: Grid, rows_ax: list[str], cols_ax: list[str], cells: list[CellStats],
                 base_name: str | None, any_div: bool) -> Table:
    """A 2-D table's statistics in long format: one row per (row, column) cell."""
    header = [_axis_header(grid, a) for a in rows_ax + cols_ax]
    header += ["n", "mean", *_stat_header(base_name, any_div)]
    align = ["l"] * len(rows_ax + cols_ax) + ["r"] * (len(header) - len(rows_ax + cols_ax))
    body = []
    for cs in cells:
        row = [Entry(text=grid.axis(a).show(v)) for a, v in zip(rows_ax + cols_ax, cs.key,
                                                                 strict=True)]
        row += [Entry(text=str(cs.n)),
                Entry(mean=cs.interval.mean) if cs.interval else Entry(text="—")]
        row += _stat_entries(cs, base_name, any_div)
        body.append(row)
    n_tests = sum(cs.diff is not None for cs in cells)
    return Table(name=f"{grid.name}-stats", title="Statistics",
                 caption=f"{grid.title}: statistics per cell.", header=header, rows=body,
                 align=align, notes=_stats_notes(base_name, n_tests, any_div),
                 label=f"{grid.table['label'] or f'tab:{grid.name}'}-stats")

"""A grid's run records as a DataFrame: one row per (cell, seed), with pandas.

:func:`frame` lays a grid's records (:mod:`reproduce.records`, from ``results/*.jsonl`` or
exported from a runs folder by :mod:`reproduce.experiments.export`) over its cells: a cell with
no record is ``pending``. :func:`check_consistent` refuses to mix recipes or code versions;
:class:`RecordIndex` holds a set of records and each grid's frame. The axis helpers
(:func:`axis_column`, ``_match``, ``_ordered``, :func:`cell_label`) select and name the rows of
a cell for the tables, the statistics and the claims. Nothing here reads a run folder.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from reproduce.errors import SrvError
from reproduce.recipes.grids import Grid
from reproduce.records import RunRecord

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "RecordIndex",
    "frame",
    "check_consistent",
    "axis_column",
    "cell_label",
]

#: the columns of a row besides the axes (``axis:<name>``)
COLUMNS = ("seed", "model", "stem", "run", "opt", "lr", "warmup_epochs", "status", "epoch",
           "epochs", "reason", "top1", "best_top1", "n_val", "params_m", "skipped_steps",
           "img_size", "dataset", "num_classes", "stem_width", "recipe", "git_commit",
           "git_dirty", "code_version", "finished", "curve", "erank", "erank_untrained")


def _row(record: RunRecord) -> dict[str, Any]:
    s, r, e = record.settings, record.result, record.env
    return dict(
        seed=record.seed, model=s.model, stem=s.stem, run=record.run, opt=s.opt, lr=s.lr,
        warmup_epochs=s.warmup_epochs, status=r.status, epoch=r.epoch, epochs=s.epochs,
        reason=r.reason, top1=r.top1, best_top1=r.best_top1, n_val=r.n_val,
        params_m=r.params_m, skipped_steps=r.skipped_steps, img_size=s.img_size,
        dataset=s.dataset, num_classes=s.num_classes, stem_width=s.stem_width, recipe=s.recipe,
        git_commit=e.git_commit, git_dirty=e.git_dirty, code_version=e.code_version,
        finished=r.finished, curve=list(record.curve), erank=r.erank,
        erank_untrained=r.erank_untrained)


def frame(grid: Grid, records: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per cell of ``grid`` (its seeds included), from the records of its grid and
    preset; a cell without a record is ``pending`` (its settings taken from a record of the
    same cell at another seed, when there is one).

    Columns: one per axis (the value label, named ``axis:<name>``) and :data:`COLUMNS`."""
    import pandas as pd

    mine = [r for r in records if r.grid == grid.name and r.preset == grid.preset]
    by_key = {(tuple(sorted(r.cell.items())), r.seed): r for r in mine}
    by_cell = {tuple(sorted(r.cell.items())): r for r in mine}
    rows = []
    for cell in grid.cells():
        key = tuple(sorted(cell.labels))
        row: dict[str, Any] = {axis_column(a): label for a, label in cell.labels}
        record = by_key.get((key, cell.seed))
        if record is not None:
            row.update(_row(record))
        else:
            like = by_cell.get(key)
            base = _row(like) if like is not None else {"model": cell.model,
                                                         "recipe": cell.recipe}
            row.update({c: None for c in COLUMNS})
            row.update({k: base.get(k) for k in ("model", "stem", "opt", "lr",
                                                   "warmup_epochs", "epochs", "img_size",
                                                   "dataset", "num_classes", "stem_width",
                                                   "recipe")})
            row.update(seed=cell.seed, status="pending", curve=[])
        rows.append(row)
    return pd.DataFrame(rows, columns=[*(axis_column(a.name) for a in grid.axes), *COLUMNS]
                        ) if rows else pd.DataFrame(columns=list(COLUMNS))


def check_consistent(df: pd.DataFrame, name: str, force: bool = False) -> list[str]:
    """Refuse results that come from different recipes or code versions (git commit or package
    version) unless ``force``; returns the provenance notes for a forced mix."""
    started = df[df["status"].isin(["done", "diverged"])]
    notes: list[str] = []
    for column, what in (("recipe", "recipes"), ("code_version", "srv versions"),
                         ("git_commit", "git commits")):
        width = 7 if column == "git_commit" else None
        values = started[column].fillna("unknown").map(lambda v, w=width: str(v)[:w])
        counts = values.value_counts()
        if len(counts) > 1:
            listing = ", ".join(f"{v} ({n} runs)" for v, n in counts.items())
            if not force:
                raise SrvError(
                    f"table {name!r}: the results come from {len(counts)} {what}: {listing}; "
                    f"delete the run directories of the odd ones and rerun 'srv ablate {name}', "
                    f"or pass --force to mix them (the table then lists every version)")
            notes.append(f"mixed {what} (--force): {listing}")
    return notes


class RecordIndex:
    """A set of run records and each grid's frame at each preset, built once.

    ``source`` says where the records came from (``results/`` or a runs folder, as the user
    named it: never an absolute path of another machine)."""

    def __init__(self, records: Iterable[RunRecord], source: str = "") -> None:
        self.records = list(records)
        self.source = source
        self._frames: dict[tuple[str, str], tuple[Grid, pd.DataFrame] | None] = {}

    def seeds(self, grid_name: str, preset: str) -> list[int]:
        """The seeds the records hold for a grid at a preset."""
        return sorted({r.seed for r in self.records
                       if r.grid == grid_name and r.preset == preset})

    def frame(self, grid_name: str, preset: str) -> tuple[Grid, pd.DataFrame] | None:
        """The grid at ``preset`` with its preset's seeds and every seed its records hold (a
        preset seed with no record is pending, as ``srv table`` on a runs folder shows it),
        and its frame; None when none of its runs finished."""
        key = (grid_name, preset)
        if key not in self._frames:
            self._frames[key] = self._load(grid_name, preset)
        return self._frames[key]

    def _load(self, grid_name: str, preset: str) -> tuple[Grid, pd.DataFrame] | None:
        from reproduce.recipes.grids import load_grid

        mine = [r for r in self.records if r.grid == grid_name and r.preset == preset]
        if not any(r.result.status in ("done", "diverged") for r in mine):
            return None
        grid = load_grid(grid_name, preset=preset)
        seeds = sorted(set(grid.seeds) | set(self.seeds(grid_name, preset)))
        if seeds != grid.seeds:
            grid = load_grid(grid_name, preset=preset, seeds=seeds)
        return grid, frame(grid, mine)


# --- the axes of a cell ---------------------------------------------------------------------------


def axis_column(name: str) -> str:
    """The DataFrame column of an axis (prefixed: an axis may be named like a field, e.g. lr)."""
    return f"axis:{name}"


def _match(df: pd.DataFrame, axes: list[str], combo: tuple[str, ...] | list[str]) -> pd.Series:
    """Rows of ``df`` whose axis labels equal ``combo``."""
    if not axes:
        return df["seed"] == df["seed"]
    return (df[[axis_column(a) for a in axes]] == list(combo)).all(axis=1)


def _ordered(grid: Grid, axes: list[str]) -> list[tuple[str, ...]]:
    """Combinations of the given axes' labels in grid order."""
    combos: list[tuple[str, ...]] = [()]
    for name in axes:
        combos = [c + (label,) for c in combos for label in grid.axis(name).labels]
    return combos


def _axis_header(grid: Grid, name: str) -> str:
    axis = grid.axis(name)
    return axis.title or name


def cell_label(grid: Grid, labels: Iterable[tuple[str, str]]) -> str:
    """The display name of a cell: its axis values, shown as the grid names them."""
    return ", ".join(grid.axis(a).show(v) for a, v in labels)


def _num_classes(row: pd.Series) -> int:
    n = row.get("num_classes")
    if n and n == n:
        return int(n)
    return {"digits": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100}.get(
        str(row.get("dataset")), 1000)

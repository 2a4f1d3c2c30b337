"""A grid's runs as records: one row per (cell, seed), gathered with pandas.

:func:`gather` reads every cell's run directory (``result.json`` for finished runs,
``status.json`` otherwise) into a DataFrame; :func:`check_consistent` refuses to mix recipes or
code versions; :class:`RunIndex` reads a runs directory once and keeps each grid's cells and
frame. The axis helpers (:func:`axis_column`, ``_match``, ``_ordered``, :func:`cell_label`)
select and name the rows of a cell for the tables (:mod:`reproduce.report.tables`), the
statistics (:mod:`reproduce.report.stat_columns`) and the claims (:mod:`reproduce.report.claims`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reproduce.errors import SrvError
from reproduce.recipes.grids import Grid
from reproduce.training.runs import read_json

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "RunIndex",
    "run_seeds",
    "discover_seeds",
    "gather",
    "check_consistent",
    "axis_column",
    "cell_label",
]


def run_seeds(grid: Grid, configs: Iterable[dict[str, Any]]) -> set[int]:
    """The seeds of the run configs that belong to the grid (one of its models, its recipe)."""
    models = {c.model for c in grid.cells()}
    return {int(c["seed"]) for c in configs
            if c.get("model") in models and c.get("recipe") == grid.recipe and "seed" in c}


def discover_seeds(grid: Grid, runs_root: Path) -> list[int]:
    """The preset's seeds plus every other seed at which one of the grid's own cells has a run
    in ``runs_root`` (so ``srv table`` shows what ``srv ablate --seeds ...`` ran). A seed that
    only other grids ran with the same models and recipe (the lr grid's seeds beside the
    lr-wd-edf draws' one seed) does not count: its cells would all be missing."""
    from dataclasses import replace

    from reproduce.experiments.cells import plan

    configs = (read_json(p) or {} for p in runs_root.glob("*/config.json"))
    extra = sorted(run_seeds(grid, configs) - set(grid.seeds))
    ran = {st.cell.seed for st in plan(replace(grid, seeds=extra), runs_root)
           if st.run_dir.is_dir()} if extra else set()
    return sorted(set(grid.seeds) | ran)


def gather(grid: Grid, runs_root: Path | str, states: list[Any] | None = None) -> pd.DataFrame:
    """One row per (cell, seed): the axis labels, status and result of its run.

    ``states`` (from :func:`reproduce.experiments.cells.plan`) saves resolving the configs again.
    Columns: one per axis (the value label, named ``axis:<name>``), ``seed``, ``model``,
    ``stem``, ``run``, ``status``, ``epoch``, ``epochs``, ``reason``, ``top1``, ``best_top1``,
    ``n_val``, ``params_m``, ``skipped_steps`` (fp16 steps the GradScaler skipped, when the engine
    records them), ``img_size``, ``dataset``, ``num_classes``, ``stem_width``, ``recipe``,
    ``git_commit``, ``git_dirty``, ``code_version``, ``finished``.
    """
    import pandas as pd

    from reproduce.experiments.cells import plan

    runs_root = Path(runs_root)
    if states is None:
        states = plan(grid, runs_root)
    rows = []
    for st in states:
        cfg = st.cfg
        result = st.info.get("result") or read_json(st.run_dir / "result.json") or {}
        env = read_json(st.run_dir / "env.json") or {}
        config = read_json(st.run_dir / "config.json") or {}
        recipe = cfg.recipe
        row: dict[str, Any] = {axis_column(a): label for a, label in st.cell.labels}
        row.update(
            seed=st.cell.seed, model=cfg.model, stem=recipe.stem, run=cfg.run_name,
            opt=recipe.opt, lr=recipe.lr, warmup_epochs=recipe.warmup_epochs,
            status=st.status, epoch=st.info.get("epoch"), epochs=recipe.epochs,
            reason=st.info.get("reason"),
            top1=result.get("top1"), best_top1=result.get("best_top1"),
            n_val=result.get("n_val"), params_m=result.get("params_m"),
            skipped_steps=result.get("skipped_steps"),
            img_size=recipe.img_size, dataset=recipe.dataset,
            num_classes=recipe.num_classes or (config.get("derived") or {}).get("num_classes"),
            stem_width=recipe.stem_width, recipe=cfg.recipe_name,
            git_commit=result.get("git_commit", env.get("git_commit")),
            git_dirty=result.get("git_dirty", env.get("git_dirty")),
            code_version=result.get("code_version", env.get("code_version")),
            finished=result.get("finished"),
        )
        rows.append(row)
    return pd.DataFrame(rows)


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


class RunIndex:
    """The runs of a runs directory, read once; a grid at a preset (its planned cells and, when
    any of its runs finished, its gathered DataFrame) loaded once and kept."""

    def __init__(self, runs_root: Path | str) -> None:
        self.runs_root = Path(runs_root)
        self.configs = [c for c in (read_json(p) for p in self.runs_root.glob("*/config.json"))
                        if c]
        #: (grid name, preset) -> (its planned cells, (grid, frame) or None): one cache for both
        self._loaded: dict[tuple[str, str], tuple[list[Any], Any]] = {}

    def _get(self, grid_name: str, preset: str
             ) -> tuple[list[Any], tuple[Grid, pd.DataFrame] | None]:
        key = (grid_name, preset)
        if key not in self._loaded:
            self._loaded[key] = self._load(grid_name, preset)
        return self._loaded[key]

    def states(self, grid_name: str, preset: str) -> list[Any]:
        """The planned cells of a grid at a preset (none when no run of it was found)."""
        return self._get(grid_name, preset)[0]

    def frame(self, grid_name: str, preset: str) -> tuple[Grid, pd.DataFrame] | None:
        """The grid at ``preset`` with every seed found for it, and its gathered runs; None when
        none of its runs finished."""
        return self._get(grid_name, preset)[1]

    def _load(self, grid_name: str, preset: str
              ) -> tuple[list[Any], tuple[Grid, pd.DataFrame] | None]:
        from reproduce.experiments.cells import plan
        from reproduce.recipes.grids import load_grid

        seeds = sorted(run_seeds(load_grid(grid_name, preset=preset), self.configs))
        if not seeds:
            return [], None
        grid = load_grid(grid_name, preset=preset, seeds=seeds)
        states = plan(grid, self.runs_root)
        if not any(s.status in ("done", "diverged") for s in states):
            return states, None
        return states, (grid, gather(grid, self.runs_root, states))


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

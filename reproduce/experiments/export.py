"""A runs folder as run records (``srv export``, and what ``srv table`` / ``srv claims`` read).

The one mapping from run folders to grid cells: a grid at a preset is planned
(:func:`~reproduce.experiments.cells.plan`: each cell's config resolved and hashed) at every seed
one of its own cells ran with, and each cell whose run folder exists becomes a
:class:`~reproduce.records.RunRecord` carrying its grid, preset, axis labels and seed. A run two
grids share is a record in each. Everything the report needs is in the record, so reporting never
resolves a config again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from reproduce.experiments.cells import CellState, plan
from reproduce.recipes.grids import Grid, calibration_seeds, list_grids, load_grid
from reproduce.records import Environment, EpochRow, RunRecord, RunResult, Settings
from reproduce.training.runs import RunDir, read_json

__all__ = ["record_of", "grid_records", "grid_seeds", "collect"]


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and value == value else None


def record_of(grid: Grid, st: CellState) -> RunRecord | None:
    """The record of one planned cell, or None when its run never started."""
    if not st.run_dir.is_dir():
        return None
    cfg, r = st.cfg, st.cfg.recipe
    result = st.info.get("result") or read_json(st.run_dir / "result.json") or {}
    env = read_json(st.run_dir / "env.json") or {}
    config = read_json(st.run_dir / "config.json") or {}
    derived = config.get("derived") or {}
    settings = Settings(
        model=cfg.model, recipe=cfg.recipe_name, stem=str(r.stem), dataset=str(r.dataset),
        img_size=int(r.img_size), num_classes=r.num_classes or derived.get("num_classes"),
        stem_width=r.stem_width, epochs=int(r.epochs), opt=str(r.opt), lr=float(r.lr),
        weight_decay=float(r.weight_decay), warmup_epochs=float(r.warmup_epochs),
        config_hash=cfg.hash)
    rows = RunDir(st.run_dir).metrics()
    outcome = RunResult(
        status=st.status, epoch=st.info.get("epoch"), reason=st.info.get("reason"),
        top1=_finite(result.get("top1")), best_top1=_finite(result.get("best_top1")),
        n_val=result.get("n_val"), params_m=_finite(result.get("params_m")),
        skipped_steps=result.get("skipped_steps"),
        train_time_s=_finite(result.get("train_time_s")) if result else
        _finite(sum(m.get("time_s") or 0.0 for m in rows)) if rows else None,
        finished=result.get("finished"))
    environment = Environment(
        git_commit=result.get("git_commit", env.get("git_commit")),
        git_dirty=result.get("git_dirty", env.get("git_dirty")),
        code_version=str(result.get("code_version", env.get("code_version", "unknown"))),
        device=env.get("device"), world_size=result.get("world_size", env.get("world_size")))
    curve = [EpochRow(int(m["epoch"]), _finite(m.get("val_top1")), _finite(m.get("train_loss")))
             for m in rows if "epoch" in m]
    return RunRecord(grid=grid.name, preset=grid.preset, cell=dict(st.cell.labels),
                     seed=st.cell.seed, run=cfg.run_name, settings=settings, result=outcome,
                     env=environment, curve=curve)


def grid_records(grid: Grid, runs_root: Path | str,
                 states: list[CellState] | None = None) -> list[RunRecord]:
    """The records of a grid's planned cells that have a run folder, in grid order."""
    if states is None:
        states = plan(grid, Path(runs_root))
    return [rec for st in states if (rec := record_of(grid, st)) is not None]


def _configs(runs_root: Path) -> list[dict[str, Any]]:
    return [c for c in (read_json(p) for p in runs_root.glob("*/config.json")) if c]


def _recorded_seeds(grid: Grid, configs: list[dict[str, Any]]) -> set[int]:
    """The seeds of the run configs that belong to the grid (one of its models, its recipe)."""
    models = {c.model for c in grid.cells()}
    return {int(c["seed"]) for c in configs
            if c.get("model") in models and c.get("recipe") == grid.recipe and "seed" in c}


def _extra_seeds(grid: Grid, configs: list[dict[str, Any]]) -> set[int]:
    """The recorded seeds a grid preset takes beyond its own: none of a calibration's, unless
    the preset is itself a calibration."""
    seeds = _recorded_seeds(grid, configs)
    return seeds if grid.calibration else seeds - (calibration_seeds() - set(grid.seeds))


def grid_seeds(grid: Grid, runs_root: Path | str,
               configs: list[dict[str, Any]] | None = None) -> list[int]:
    """The preset's seeds that ran plus every other seed at which one of the grid's own cells
    has a run (so a table shows what ``srv ablate --seeds ...`` ran). A seed that only other
    grids ran with the same models and recipe does not count: its cells would all be missing."""
    runs_root = Path(runs_root)
    if configs is None:
        configs = _configs(runs_root)
    extra = sorted(_extra_seeds(grid, configs) - set(grid.seeds))
    ran = {st.cell.seed for st in plan(replace(grid, seeds=extra), runs_root)
           if st.run_dir.is_dir()} if extra else set()
    return sorted(set(grid.seeds) | ran)


def collect(runs_root: Path | str, grids: Iterable[str] | None = None,
            presets: Iterable[str] | None = None) -> list[RunRecord]:
    """Every record of a runs folder: each grid at each preset with a finished run."""
    runs_root = Path(runs_root)
    configs = _configs(runs_root)
    wanted_presets = set(presets) if presets else None
    out: list[RunRecord] = []
    for name in grids or list_grids():
        for preset in load_grid(name).presets:
            if wanted_presets and preset not in wanted_presets:
                continue
            seeds = sorted(_extra_seeds(load_grid(name, preset=preset), configs))
            if not seeds:
                continue
            grid = load_grid(name, preset=preset, seeds=seeds)
            records = grid_records(grid, runs_root)
            if any(r.result.status in ("done", "diverged") for r in records):
                out += records
    return out


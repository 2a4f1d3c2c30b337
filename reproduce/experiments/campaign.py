"""Several grids run as one job (``srv claims --run``): their cells planned together, a time
estimate per grid before anything trains, then each grid through the grid runner in turn.

Grids share runs: a cell of one grid whose configuration is a cell of an earlier grid (the lr
grid's lr 1e-3 is the main job's conv-stem at its own lr) has the same run folder, so it trains
once; the plan counts it for the first grid that has it and shows it as ``shared`` after that.

The time of a cell is estimated from measured wall times: the seconds per update of the finished
runs in the runs folder (``result.json``'s ``wall_time_s`` / ``steps``) of the same model and
optimizer, else of the same model, else of any run there, else :data:`STATED_S_PER_STEP`; times
the cell's updates left. A grid's estimate is the sum over its cells to train divided by
``--jobs`` (the measured wall times already include the slow-down of cells trained side by side
when they were trained that way).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reproduce.experiments.cells import CellState, check_cells, plan
from reproduce.experiments.runner import RunOptions, Summary, decide, run_grid
from reproduce.recipes.grids import Grid
from reproduce.training.runs import read_json

__all__ = ["STATED_S_PER_STEP", "Rates", "Stage", "check_stages", "format_seconds",
           "plan_stages", "run_stages", "stage_lines"]

#: A cell's wall time per update when no finished run says better: the full run's 100 8-epoch
#: cells of 88 updates (AdamW and SGD) took 50-61 s each, median 56 s, two at a time (--jobs 2)
#: on the idle 2-core AMD EPYC development machine (docs/claims.md, "The full run's verdicts"),
#: about 0.64 s per update per cell; a loaded machine of that kind took up to 1.1 s.
STATED_S_PER_STEP = 0.64


@dataclass
class Stage:
    """One grid of the job at its preset, its cells and why it is run (the claims it feeds)."""

    grid: Grid
    states: list[CellState]
    why: list[str] = field(default_factory=list)
    #: run folders an earlier stage of the job already has (trained once, there)
    shared: set[str] = field(default_factory=set)

    def new(self, options: RunOptions) -> list[CellState]:
        """The cells this stage trains (left to train and not an earlier stage's)."""
        return [s for s in self.states
                if decide(s, options) != "skip" and s.cfg.run_name not in self.shared]


class Rates:
    """Measured seconds per update of the finished runs of a runs folder."""

    def __init__(self, runs_root: Path | str) -> None:
        self.by_key: dict[tuple[str, ...], list[float]] = {}
        for path in sorted(Path(runs_root).glob("*/result.json")):
            res = read_json(path) or {}
            cfg = read_json(path.parent / "config.json") or {}
            wall, steps = res.get("wall_time_s"), res.get("steps")
            if not (isinstance(wall, int | float) and isinstance(steps, int) and steps > 0):
                continue
            rate = float(wall) / steps
            model, opt = str(res.get("model", "")), str(cfg.get("opt", ""))
            for key in ((model, opt), (model,), ()):
                self.by_key.setdefault(key, []).append(rate)

    def per_step(self, state: CellState) -> tuple[float, str]:
        """Seconds per update for the cell's model and optimizer, and where it comes from."""
        model, opt = state.cell.model, str(state.cfg.recipe.opt)
        # SAM takes two gradients a step: twice a figure that is not SAM's own
        twice = 2.0 if opt.startswith("sam") else 1.0
        for key in ((model, opt), (model,), ()):
            if key in self.by_key:
                factor = 1.0 if len(key) == 2 else twice
                return factor * statistics.median(self.by_key[key]), "measured"
        return twice * STATED_S_PER_STEP, "stated"


def plan_stages(grids: Sequence[tuple[Grid, list[str]]], runs_root: Path | str,
                resolve: Callable[..., Any] | None = None) -> list[Stage]:
    """Each grid's cells with their status, in the given order; run folders an earlier grid
    already has are marked shared. Resolves every config (bad keys fail here, before any
    training) and writes nothing."""
    stages: list[Stage] = []
    seen: set[str] = set()
    for grid, why in grids:
        states = plan(grid, runs_root, resolve=resolve)
        names = {s.cfg.run_name for s in states}
        stages.append(Stage(grid, states, list(why), shared=names & seen))
        seen |= names
    return stages


def format_seconds(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2.3 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _seconds(state: CellState, rates: Rates) -> tuple[float, str]:
    steps = state.steps_per_epoch or 0
    left = state.epochs - int(state.info.get("epoch") or 0) if state.status == "partial" \
        else state.epochs
    rate, source = rates.per_step(state)
    return rate * steps * max(0, left), source


def stage_lines(stages: Sequence[Stage], options: RunOptions, rates: Rates
                ) -> tuple[list[str], float]:
    """Per grid: its cells by status, the cells it trains and their estimated time; the total.
    Needs each cell's ``steps_per_epoch`` (:func:`~reproduce.experiments.cells.check_cells`)."""
    from collections import Counter

    jobs = max(1, options.jobs if options.backend == "local" else 1)
    lines, total = [], 0.0
    for stage in stages:
        g = stage.grid
        counts = Counter("shared" if s.cfg.run_name in stage.shared else s.status
                         for s in stage.states)
        shown = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
        todo = stage.new(options)
        estimates = [_seconds(s, rates) for s in todo]
        seconds = sum(t for t, _ in estimates) / jobs
        total += seconds
        kinds = Counter(src for _, src in estimates)
        sources = "; ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing to train"
        why = f" for {', '.join(stage.why)}" if stage.why else ""
        lines.append(f"{g.name} / {g.preset}{why}: {len(stage.states)} cells ({shown}); "
                     f"{len(todo)} to train, about {format_seconds(seconds)} at --jobs {jobs} "
                     f"(cell times: {sources})")
    return lines, total


def check_stages(stages: Sequence[Stage], world_size: int = 1) -> list[tuple[CellState, str]]:
    """:func:`~reproduce.experiments.cells.check_cells` over every stage (models built once)."""
    models: dict[Any, Any] = {}
    bad = []
    for stage in stages:
        bad += check_cells(stage.states, world_size, models)
    return bad


def run_stages(stages: Sequence[Stage], runs_root: Path | str, options: RunOptions,
               progress: Callable[[], Any] | None = None,
               train_fn: Any = None) -> list[Summary]:
    """Each stage through :func:`~reproduce.experiments.runner.run_grid`, in order; a stage's
    statuses are read again when its turn comes (an earlier stage may have trained its shared
    cells). ``progress()`` makes a fresh view per grid."""
    summaries = []
    for stage in stages:
        for state in stage.states:
            state.refresh(options.stale_after_s)
        summary = run_grid(stage.states, runs_root, options,
                           progress=progress() if progress else None, train_fn=train_fn)
        summaries.append(summary)
        if summary.stopped_early:
            break
    return summaries

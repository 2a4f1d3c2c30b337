"""Several grids run as one job (``srv claims --run``): their cells planned together, a time
estimate per grid before anything trains, then each grid through the grid runner in turn.

Grids share runs: a cell of one grid whose configuration is a cell of an earlier grid (the lr
grid's lr 1e-3 is the main job's conv-stem at its own lr) has the same run folder, so it trains
once; the plan counts it for the first grid that has it and shows it as ``shared`` after that.

The time of a cell is its updates left x the seconds per update of the finished runs in the
runs folder with the same model and config (:class:`~reproduce.training.cost.StepTimes`: the
seed and the lr schedule may differ, nothing else), else the assumed CPU-scale rate, and the
lines say which. A grid's estimate is the sum over its cells to train divided by ``--jobs``
(the measured wall times already include the slow-down of cells trained side by side when they
were trained that way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reproduce.experiments.cells import CellState, check_cells, plan
from reproduce.experiments.runner import RunOptions, Summary, decide, run_grid
from reproduce.recipes.grids import Grid
from reproduce.training.cost import ASSUMED_S_PER_STEP, StepTimes, format_seconds
from reproduce.utils.console import plural

__all__ = ["STATED_S_PER_STEP", "Stage", "StepTimes", "check_stages", "format_seconds",
           "plan_stages", "run_stages", "stage_lines"]

#: the assumed seconds per update of a vit-mini cell (see :mod:`reproduce.training.cost`)
STATED_S_PER_STEP = ASSUMED_S_PER_STEP


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


def _seconds(state: CellState, times: StepTimes) -> tuple[float, str]:
    """A cell's estimated seconds and the kind of figure (measured / assumed / unknown)."""
    steps = state.steps_per_epoch or 0
    left = state.epochs - int(state.info.get("epoch") or 0) if state.status == "partial" \
        else state.epochs
    rate = times.per_step(state.cell.model, state.cfg.recipe)
    if rate is None:
        return 0.0, "unknown"
    return rate.seconds * steps * max(0, left), "measured" if rate.runs else "assumed"


def stage_lines(stages: Sequence[Stage], options: RunOptions, times: StepTimes
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
        estimates = [_seconds(s, times) for s in todo]
        seconds = sum(t for t, _ in estimates) / jobs
        total += seconds
        kinds = Counter(src for _, src in estimates)
        said = {"measured": "extrapolated from matching runs", "assumed": "at the assumed rate",
                "unknown": "unknown: no matching run"}
        sources = "; ".join(f"{n} {said[k]}" for k, n in sorted(kinds.items())) \
            or "nothing to train"
        why = f" for {', '.join(stage.why)}" if stage.why else ""
        lines.append(f"{g.name} / {g.preset}{why}: {plural(len(stage.states), 'cell')} "
                     f"({shown}); "
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

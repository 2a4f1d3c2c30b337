"""What ``srv ablate --dry-run`` says it would launch, and what that costs: per backend the
exact torchrun commands or the SLURM parameters, then the training images, the GPU-hours
(:mod:`reproduce.training.cost`) and the seeds a verdict needs."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

from reproduce.experiments.cells import CellState
from reproduce.experiments.local import train_command
from reproduce.experiments.runner import RunOptions, decide
from reproduce.experiments.slurm import (
    SlurmOptions,
    slurm_executor,
    slurm_parameters,
    submitit_folder,
)
from reproduce.experiments.torchrun import torchrun_command
from reproduce.recipes.grids import Grid
from reproduce.training.cost import (
    Cost,
    GpuRates,
    StepTimes,
    cpu_scale,
    format_seconds,
    parse_rates,
    rate_notes,
    seeds_note,
    wall_clock,
)
from reproduce.utils.console import plural

__all__ = ["launch_lines", "cost_lines", "grid_cost", "time_lines"]


def _todo(states: Sequence[CellState], options: RunOptions) -> list[CellState]:
    return [s for s in states if decide(s, options) != "skip"]


def launch_lines(grid: Grid, states: Sequence[CellState], runs_root: Path, options: RunOptions,
                 slurm: SlurmOptions | None = None) -> list[str]:
    """What each backend would submit for the cells left to train."""
    todo = _todo(states, options)
    if not todo:
        return ["launch: nothing to train (every cell finished, diverged, failed or running)"]
    if options.backend == "slurm":
        slurm = slurm or SlurmOptions()
        cluster, named = slurm_executor(slurm, check=False)
        params = slurm_parameters(grid, slurm, cluster)
        world = slurm.nodes * slurm.gpus_per_task_node
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        logs = "<job id>/" if cluster == "slurm" else "<job id>_<task>_log.out"
        return [f"launch: one SLURM job array of {plural(len(todo), 'task')} through submitit, "
                f"each cell on {slurm.nodes} node(s) x {slurm.gpus_per_task_node} GPU(s) "
                f"(world size {world}), at most {slurm.parallelism} at once",
                f"  executor: {named}",
                f"  {'sbatch' if cluster == 'slurm' else cluster} parameters: {shown}",
                f"  job scripts and logs: {submitit_folder(grid, runs_root)}/{logs}"]
    if options.backend == "torchrun":
        nodes = options.nodes
        lines = ["launch: one torchrun per cell, one after another"
                 + (f" (node {nodes.node_rank} of {nodes.nnodes}; run the same srv ablate on "
                    f"every node with its --node-rank)" if nodes and nodes.nnodes > 1 else "")
                 + f"; logs in {Path(runs_root) / '.logs'}/<run>.log"]
        lines += ["  " + shlex.join(torchrun_command(s, runs_root, options.nproc,
                                                     decide(s, options) == "restart", nodes))
                  for s in todo]
        return lines
    if options.jobs > 1:
        lines = [f"launch: {options.jobs} cells at once, each a child process (logs in "
                 f"{Path(runs_root) / '.logs'}/<run>.log):"]
        return lines + ["  " + shlex.join(train_command(s, runs_root,
                                                        decide(s, options) == "restart"))
                        for s in todo]
    return [f"launch: {plural(len(todo), 'cell')} one after another in this process"]


def _updates_left(s: CellState) -> int:
    """The updates a cell still has to train (a partial cell: its remaining epochs only)."""
    done = int(s.info.get("epoch") or 0) if s.status == "partial" else 0
    return (s.steps_per_epoch or 0) * max(0, s.epochs - done)


def grid_cost(states: Sequence[CellState], options: RunOptions, folders: Iterable[Path],
              img_per_s: str | float | None = None) -> list[tuple[CellState, Cost]]:
    """Each cell left to train with its training images and GPU-hours (a partial cell: its
    remaining epochs only), at :class:`~reproduce.training.cost.GpuRates` (``img_per_s``: one
    figure or MODEL=RATE pairs; else srv bench figures in ``folders``, else the model's
    stem reference scaled by GFLOPs, else unknown)."""
    rates = GpuRates(parse_rates(img_per_s), folders, anchor=False)
    out = []
    for s in _todo(states, options):
        r = s.cfg.recipe
        out.append((s, Cost(_updates_left(s) * int(r.batch_size), rates(s.cell.model, r))))
    return out


def time_lines(states: Sequence[CellState], jobs: int, times: StepTimes) -> list[str]:
    """The CPU-scale cells' time on this machine: seconds per update of matching finished runs
    (or the assumed rate) x the updates left, over ``jobs`` cells at once."""
    known, unknown = 0.0, []
    sources: dict[str, int] = {}
    matched: dict[tuple[object, ...], int] = {}  # the matching runs, each counted once
    for s in states:
        rate = times.per_step(s.cell.model, s.cfg.recipe)
        if rate is None:
            unknown.append(s.cell.model)
            continue
        known += rate.seconds * _updates_left(s)
        if rate.runs:
            matched[rate.key] = rate.runs
        kind = "measured" if rate.runs else rate.source
        sources[kind] = sources.get(kind, 0) + 1
    if not sources:
        return [f"time: unknown (no finished run of {', '.join(dict.fromkeys(unknown))} with "
                f"this config in {times.root}, and no assumed rate for it)"]
    runs = sum(matched.values())
    parts = [f"{plural(n, 'cell')} extrapolated from {plural(runs, 'matching run')} in "
             f"{times.root}" if kind == "measured" else f"{plural(n, 'cell')} at the {kind}"
             for kind, n in sources.items()]
    if unknown:
        parts.append(f"{plural(len(unknown), 'cell')} unknown (no matching run)")
    return [f"time: about {format_seconds(known / max(1, jobs))} at --jobs {jobs} ("
            + "; ".join(parts) + ")"]


def cost_lines(grid: Grid, states: Sequence[CellState], options: RunOptions,
               folders: Iterable[Path], img_per_s: str | float | None = None,
               times: StepTimes | None = None, parallel: int = 1, world: int = 1
               ) -> list[str]:
    """The cost of the cells left to train: CPU-scale cells as time on this machine
    (:func:`time_lines`, ``times`` from the runs folder), GPU-scale ones as GPU-hours per model
    and in total, with the wall-clock time on ``world`` GPUs per cell (``parallel`` cells at
    once); then the seeds note."""
    costs = grid_cost(states, options, folders, img_per_s)
    seeds = len(grid.seeds)
    draws = sum(len(a.points) for a in grid.axes if a.kind == "random")
    note = (f"{seeds} calibration seed{'s' if seeds != 1 else ''} per cell: a calibration "
            f"preset chooses a scale (scripts/regime_criterion.py reads its runs); srv claims "
            f"never takes them as evidence" if grid.calibration else seeds_note(seeds, draws))
    if not costs:
        return ["cost: nothing left to train", f"seeds: {note}"]
    images = sum(c.images for _, c in costs)
    lines = [f"cost: {plural(len(costs), 'cell')} to train, {images:,} training images"]
    cpu = [s for s, _ in costs if cpu_scale(s.cfg.recipe)]
    if cpu:
        jobs = options.jobs if options.backend == "local" else 1
        lines += time_lines(cpu, jobs, times or StepTimes(Path("runs")))
    gpu = [(s, c) for s, c in costs if not cpu_scale(s.cfg.recipe)]
    if gpu:
        by_model: dict[str, list[Cost]] = {}
        for s, c in gpu:
            by_model.setdefault(s.cell.model, []).append(c)
        hours = [c.gpu_hours for _, c in gpu]
        if all(h is not None for h in hours):
            total = sum(h for h in hours if h is not None)
            at_once = max(1, min(parallel, len(gpu)))
            lines.append(f"GPU-hours: {total:,.1f}; wall-clock about "
                         f"{wall_clock(total / at_once, max(1, world))} per cell"
                         + (f", {at_once} cells at once" if at_once > 1 else
                            ", cells one after another"))
        else:
            lines.append("GPU-hours: give --img-per-s (no srv bench figure in "
                         "tables/benchmarks/ for " + ", ".join(
                             m for m, cs in by_model.items() if cs[0].throughput is None) + ")")
        for model, cs in by_model.items():
            merged = Cost(sum(c.images for c in cs), cs[0].throughput)
            lines.append(f"  {model} x {len(cs)}: {merged.describe()}")
        lines += [f"  {note}" for note in rate_notes(c.throughput for _, c in gpu)]
    lines.append(f"seeds: {note}")
    return lines

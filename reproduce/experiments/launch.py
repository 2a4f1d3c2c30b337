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
from reproduce.training.cost import Cost, Throughput, measured_throughput, run_cost, seeds_note

__all__ = ["launch_lines", "cost_lines", "grid_cost"]


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
        return [f"launch: one SLURM job array of {len(todo)} tasks through submitit, each cell "
                f"on {slurm.nodes} node(s) x {slurm.gpus_per_task_node} GPU(s) (world size "
                f"{world}), at most {slurm.parallelism} at once",
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
    return [f"launch: {len(todo)} cells one after another in this process"]


def grid_cost(states: Sequence[CellState], options: RunOptions, folders: Iterable[Path],
              img_per_s: float | None = None) -> list[tuple[CellState, Cost]]:
    """Each cell left to train with its cost (a partial cell: its remaining epochs only).

    The throughput is ``img_per_s`` when given, else the ``srv bench`` figure for the cell's
    model found in ``folders``, else unknown."""
    folders = list(folders)
    found: dict[tuple[str, bool], Throughput | None] = {}
    out = []
    for s in _todo(states, options):
        r = s.cfg.recipe
        if img_per_s:
            rate: Throughput | None = Throughput(img_per_s, "--img-per-s")
        else:
            key = (s.cell.model, bool(getattr(r, "compile", False)))
            if key not in found:
                found[key] = measured_throughput(s.cell.model, r, folders)
            rate = found[key]
        steps = s.steps_per_epoch or 0
        left = max(0, s.epochs - int(s.info.get("epoch") or 0)) if s.status == "partial" \
            else s.epochs
        cost = run_cost(r, steps, rate)
        out.append((s, Cost(cost.images * left // max(1, s.epochs), rate)))
    return out


def cost_lines(grid: Grid, states: Sequence[CellState], options: RunOptions,
               folders: Iterable[Path], img_per_s: float | None = None) -> list[str]:
    """The cost of the cells left to train, per model and in total, and the seeds note."""
    costs = grid_cost(states, options, folders, img_per_s)
    seeds = len(grid.seeds)
    draws = sum(len(a.points) for a in grid.axes if a.kind == "random")
    if not costs:
        return ["cost: nothing left to train", f"seeds: {seeds_note(seeds, draws)}"]
    by_model: dict[str, list[Cost]] = {}
    for s, c in costs:
        by_model.setdefault(s.cell.model, []).append(c)
    images = sum(c.images for _, c in costs)
    hours = [c.gpu_hours for _, c in costs]
    total = (f"{sum(h for h in hours if h is not None):,.1f} GPU-hours"
             if all(h is not None for h in hours) else
             "GPU-hours: give --img-per-s (no srv bench figure in tables/benchmarks/ for "
             + ", ".join(m for m, cs in by_model.items() if cs[0].throughput is None) + ")")
    lines = [f"cost: {len(costs)} cells to train, {images:,} training images; {total}"]
    for model, cs in by_model.items():
        merged = Cost(sum(c.images for c in cs), cs[0].throughput)
        lines.append(f"  {model} x {len(cs)}: {merged.describe()}")
    lines.append(f"seeds: {seeds_note(seeds, draws)}")
    return lines

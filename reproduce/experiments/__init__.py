"""Grids of runs: the cells of a grid at a preset, their status, and the backends that train
them (one process, local jobs, torchrun, SLURM through submitit).

* :mod:`~reproduce.experiments.locks`: a lock file per cell (two workers never train one cell);
* :mod:`~reproduce.experiments.cells`: each cell's config and status (one vocabulary, derived
  from the engine's run statuses), the no-training check of a grid;
* :mod:`~reproduce.experiments.local`, :mod:`~reproduce.experiments.torchrun`,
  :mod:`~reproduce.experiments.slurm`: the backends;
* :mod:`~reproduce.experiments.runner`: which cells to train, in what order, under their locks;
* :mod:`~reproduce.experiments.grid_progress`: the view over a grid while it trains;
* :mod:`~reproduce.experiments.launch`: what a dry run says it would launch, and its cost.

The names below are the public parts (``srv ablate`` and the report read them here). Nothing
here imports torch at module level.

May import: :mod:`reproduce.training` and everything below it.
"""

from reproduce.experiments.cells import (
    FAILED_DIR,
    STATUSES,
    CellState,
    check_cells,
    inspect_run,
    plan,
)
from reproduce.experiments.grid_progress import GridProgress
from reproduce.experiments.launch import cost_lines, grid_cost, launch_lines
from reproduce.experiments.local import (
    LOG_DIR,
    Outcome,
    local_gpus,
    run_child,
    run_local,
    train_command,
    visible_gpus,
)
from reproduce.experiments.locks import LOCK_DIR, STALE_AFTER_S, CellLock, process_alive
from reproduce.experiments.runner import RunOptions, Summary, decide, run_grid
from reproduce.experiments.slurm import (
    SUBMITIT_DIR,
    CellJob,
    SlurmOptions,
    slurm_executor,
    slurm_parameters,
    submit_slurm,
    submitit_folder,
)
from reproduce.experiments.torchrun import Nodes, run_torchrun, torchrun_command

__all__ = [
    "FAILED_DIR", "LOCK_DIR", "LOG_DIR", "STALE_AFTER_S", "STATUSES", "SUBMITIT_DIR",
    "CellJob", "CellLock", "CellState", "GridProgress", "Nodes", "Outcome", "RunOptions",
    "SlurmOptions", "Summary", "check_cells", "cost_lines", "decide", "grid_cost",
    "inspect_run", "launch_lines", "local_gpus", "plan", "process_alive", "run_child",
    "run_grid", "run_local", "run_torchrun", "slurm_executor", "slurm_parameters", "submit_slurm",
    "submitit_folder", "torchrun_command", "train_command", "visible_gpus",
]

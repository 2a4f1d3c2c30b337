"""The torchrun backend: one ``torchrun --standalone --nproc_per_node N -m reproduce train ...``
launch per cell (the local backend's child command under torchrun; its log goes to
``<runs_root>/.logs/``)."""

from __future__ import annotations

import sys
from pathlib import Path

from reproduce.experiments.cells import CellState
from reproduce.experiments.local import Outcome, run_child, train_command

__all__ = ["torchrun_command", "run_torchrun"]


def torchrun_command(state: CellState, runs_root: Path, nproc: int, restart: bool) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m reproduce train``:
    :func:`train_command` under torchrun."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", *train_command(state, runs_root, restart)[1:]]



def run_torchrun(state: CellState, runs_root: Path, restart: bool, nproc: int) -> Outcome:
    """One torchrun launch for the cell; its output goes to ``<runs_root>/.logs/<run>.log``."""
    return run_child(state, runs_root, torchrun_command(state, runs_root, nproc, restart))


"""The torchrun backend: one ``torchrun ... -m reproduce train ...`` launch per cell (the local
backend's child command under torchrun; its log goes to ``<runs_root>/.logs/``).

One node: ``--standalone``. Several nodes: every node runs the same ``srv ablate`` with its
``--node-rank`` and one rendezvous endpoint (torchrun's c10d rendezvous, ``--rdzv-endpoint
HOST:PORT`` on node 0), and each cell's launch rendezvouses under its own id (the run's name), so
the nodes meet cell by cell. Node 0 holds the cells' locks; the other nodes follow its grid order
(see :mod:`reproduce.experiments.runner`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from reproduce.errors import SrvError
from reproduce.experiments.cells import CellState
from reproduce.experiments.local import Outcome, run_child, train_command

__all__ = ["Nodes", "torchrun_command", "run_torchrun"]


@dataclass(frozen=True)
class Nodes:
    """Where a torchrun launch runs: ``nnodes`` nodes, this one ``node_rank``, meeting at
    ``rdzv_endpoint`` (HOST:PORT; required for more than one node)."""

    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    rdzv_timeout_s: int = 900  # how long a cell's launch waits for the other nodes

    def __post_init__(self) -> None:
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise SrvError(f"--nnodes {self.nnodes} needs --rdzv-endpoint HOST:PORT (node 0's "
                           f"address and a free port, the same on every node)")
        if not 0 <= self.node_rank < self.nnodes:
            raise SrvError(f"--node-rank {self.node_rank} is not in 0..{self.nnodes - 1} "
                           f"(--nnodes {self.nnodes})")
        if self.rdzv_endpoint and ":" not in self.rdzv_endpoint:
            raise SrvError(f"--rdzv-endpoint {self.rdzv_endpoint!r}: give HOST:PORT, e.g. "
                           f"node001:29500")

    def args(self, run_name: str) -> list[str]:
        """torchrun's node arguments for one cell."""
        if self.nnodes == 1 and not self.rdzv_endpoint:
            return ["--standalone"]
        return [f"--nnodes={self.nnodes}", f"--node_rank={self.node_rank}",
                "--rdzv_backend=c10d", f"--rdzv_endpoint={self.rdzv_endpoint}",
                f"--rdzv_id={run_name}", f"--rdzv_conf=join_timeout={self.rdzv_timeout_s}"]


def torchrun_command(state: CellState, runs_root: Path, nproc: int, restart: bool,
                     nodes: Nodes | None = None) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m reproduce train``
    (or the multi-node rendezvous of ``nodes``): :func:`train_command` under torchrun."""
    nodes = nodes or Nodes()
    return [sys.executable, "-m", "torch.distributed.run", *nodes.args(state.cfg.run_name),
            f"--nproc_per_node={nproc}", *train_command(state, runs_root, restart)[1:]]


def run_torchrun(state: CellState, runs_root: Path, restart: bool, nproc: int,
                 nodes: Nodes | None = None) -> Outcome:
    """One torchrun launch for the cell; its output goes to ``<runs_root>/.logs/<run>.log``."""
    return run_child(state, runs_root, torchrun_command(state, runs_root, nproc, restart, nodes))

"""The torchrun backend: one ``torchrun ... -m reproduce train ...`` launch per cell (the local
backend's child command under torchrun; its log goes to ``<runs_root>/.logs/``).

One node: ``--standalone``. Several nodes: every node runs the same ``srv ablate`` with its
``--node-rank`` and one rendezvous endpoint (torchrun's c10d rendezvous, ``--rdzv-endpoint
HOST:PORT`` on node 0), and each cell's launch rendezvouses under its own id (the run's name), so
the nodes meet cell by cell. Node 0 holds the cells' locks and decides which cells it launches;
the other nodes launch exactly those, told by node 0 (:class:`NodeDecisions`, at PORT + 1; see
:mod:`reproduce.experiments.runner`).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError
from reproduce.experiments.cells import CellState
from reproduce.experiments.local import Outcome, run_child, train_command

__all__ = ["Nodes", "NodeDecisions", "torchrun_command", "run_torchrun"]


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


class NodeDecisions:
    """Node 0's decision for each cell of a multi-node grid (``run``, ``restart`` or ``skip``),
    told to the other nodes, which launch exactly the cells node 0 launches.

    A follower cannot decide from the cells' files: a cell locked by another worker looks the
    same as one node 0 is about to launch, and launching a cell node 0 skipped would leave the
    follower waiting out the rendezvous while the nodes fall out of step. The decisions travel
    through a ``TCPStore`` that node 0's ``srv ablate`` hosts at the rendezvous host, port + 1,
    for the length of its pass over the grid: a decision of an earlier pass is never read.
    """

    CONNECT_S = 900  # a follower started before node 0 waits this long for it
    WAIT_S = 48 * 3600  # and this long for node 0's next decision (node 0 may be training)
    ACK_S = 60  # node 0, at the end, waits this long for the followers to read the last ones

    def __init__(self, nodes: Nodes, states: Sequence[CellState]) -> None:
        from torch.distributed import TCPStore

        assert nodes.rdzv_endpoint is not None
        host, port = nodes.rdzv_endpoint.rsplit(":", 1)
        self.nodes, self.lost = nodes, False
        self.told: set[int] = set()
        self.n = len(states)
        names = "\n".join(s.cfg.run_name for s in states)
        self.grid = hashlib.sha256(names.encode()).hexdigest()[:16]
        self.leader = nodes.node_rank == 0
        try:
            self.store = TCPStore(host, int(port) + 1, is_master=self.leader,
                                  wait_for_workers=False,
                                  timeout=timedelta(seconds=self.CONNECT_S))
        except (RuntimeError, TimeoutError) as err:
            where = f"{host}:{int(port) + 1}"
            raise SrvError(f"node {nodes.node_rank}: cannot {'open' if self.leader else 'reach'}"
                           f" node 0's cell decisions at {where} (the --rdzv-endpoint port + 1"
                           f"{', in use?' if self.leader else ''}): {err}") from None
        self.store.set_timeout(timedelta(seconds=self.WAIT_S))
        if self.leader:
            self.store.set("grid", self.grid)
        elif (theirs := self.store.get("grid").decode()) != self.grid:
            raise SrvError(f"node {nodes.node_rank} plans another grid than node 0 (cells "
                           f"{self.grid} here, {theirs} there): run the same srv ablate "
                           f"command on every node")

    def tell(self, index: int, action: str) -> None:
        """Node 0: what it does with cell ``index`` (before it launches it)."""
        if index not in self.told:
            self.told.add(index)
            self.store.set(f"cell/{index}", action)

    def ask(self, index: int) -> str:
        """A follower: node 0's decision on cell ``index`` (waits for it); ``skip`` once node 0
        has gone (its pass is over)."""
        if self.lost:
            return "skip"
        try:
            return self.store.get(f"cell/{index}").decode()
        except Exception:  # noqa: BLE001 - node 0's store closed: no more cells to join
            self.lost = True
            return "skip"

    def close(self) -> None:
        """Node 0: ``skip`` for every cell not decided (it stopped early), then wait a little
        for the followers to read them; a follower: say it is done."""
        if self.leader:
            for index in range(self.n):
                self.tell(index, "skip")
            keys = [f"done/{k}" for k in range(1, self.nodes.nnodes)]
            try:
                self.store.wait(keys, timedelta(seconds=self.ACK_S))
            except Exception:  # noqa: BLE001 - a follower that left early reads nothing more
                pass
        elif not self.lost:
            try:
                self.store.set(f"done/{self.nodes.node_rank}", "1")
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> NodeDecisions:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

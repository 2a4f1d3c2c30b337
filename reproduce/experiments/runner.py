"""The grid runner: which cells to train and in what order, each under its lock, one at a time or
``jobs`` at once (local backend) or one torchrun launch each.

Finished and diverged cells are skipped, partial ones resume (the engine's auto-resume), failed
ones rerun only with ``retry_failed``; a failing cell does not stop the grid unless ``fail_fast``
/ ``max_failures`` say so.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError
from reproduce.experiments.cells import CellState
from reproduce.experiments.local import Outcome, local_gpus, run_local, run_process
from reproduce.experiments.locks import STALE_AFTER_S
from reproduce.experiments.torchrun import NodeDecisions, Nodes, run_torchrun

__all__ = ["RunOptions", "Summary", "decide", "run_grid"]


@dataclass
class RunOptions:
    backend: str = "local"  # local | torchrun
    nproc: int = 1
    jobs: int = 1  # local backend: cells trained at once (child processes when > 1)
    retry_failed: bool = False
    retry_diverged: bool = False
    fail_fast: bool = False
    max_failures: int | None = None
    stale_after_s: float = STALE_AFTER_S
    #: local jobs: the GPUs the children share out, one each at a time (None: decided by
    #: :func:`~reproduce.experiments.local.local_gpus` when the grid runs)
    gpus: tuple[str, ...] | None = None
    share_gpus: bool = False  # let jobs exceed the visible GPUs
    #: torchrun over several nodes (None: one node, --standalone)
    nodes: Nodes | None = None

    @property
    def follower(self) -> bool:
        """A torchrun node other than node 0: it takes no locks and launches exactly the cells
        node 0 launches, in the same order, as node 0 tells it (:class:`NodeDecisions`)."""
        return self.nodes is not None and self.nodes.node_rank > 0

    def threads(self) -> int:
        """Intra-op threads of each of ``jobs`` child processes: the CPUs shared out."""
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
        return max(1, cpus // max(1, self.jobs))


@dataclass
class Summary:
    """What a pass over the grid did, cell by cell."""

    states: list[CellState]
    actions: dict[int, str] = field(default_factory=dict)  # index -> trained / skipped ...
    failures: list[tuple[CellState, str]] = field(default_factory=list)
    warnings: list[tuple[CellState, str]] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0

    def counts(self) -> Counter[str]:
        return Counter(s.status for s in self.states)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.stopped_early


def decide(state: CellState, options: RunOptions) -> str:
    """What to do with a cell: ``run``, ``restart`` or ``skip`` (a torchrun follower node does
    what node 0 decides instead)."""
    if state.status in ("pending", "partial"):
        return "run"
    if state.status == "failed":
        return "run" if options.retry_failed else "skip"
    if state.status == "diverged":
        return "restart" if options.retry_diverged else "skip"
    return "skip"  # done, or running elsewhere


TrainFn = Callable[[CellState, Path, bool], Outcome]


class _NoLock:
    """A torchrun follower node's stand-in for a cell lock (node 0 holds the real one)."""

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass


def _default_train_fn(options: RunOptions, states: Sequence[CellState]) -> TrainFn:
    if options.backend == "local":
        if options.jobs > 1:
            threads = options.threads()
            gpus = options.gpus if options.gpus is not None \
                else local_gpus(states, options.jobs, options.share_gpus)
            # one slot per job, slot k on GPU k mod n: a running child holds its slot's GPU
            slots: queue.SimpleQueue[str | None] = queue.SimpleQueue()
            for k in range(options.jobs):
                slots.put(gpus[k % len(gpus)] if gpus else None)

            def in_child(s: CellState, r: Path, restart: bool) -> Outcome:
                gpu = slots.get()
                try:
                    return run_process(s, r, restart, threads, gpu)
                finally:
                    slots.put(gpu)
            return in_child
        return run_local
    if options.backend == "torchrun":
        def launch(s: CellState, r: Path, restart: bool) -> Outcome:
            return run_torchrun(s, r, restart, options.nproc, options.nodes)
        return launch
    raise SrvError(f"backend {options.backend!r} is not local, torchrun or slurm")


def run_grid(states: Sequence[CellState], runs_root: Path | str, options: RunOptions,
             progress: Any = None, train_fn: TrainFn | None = None) -> Summary:
    """Run every cell that needs it, in grid order, each under its lock; ``options.jobs`` cells
    at a time (threads that each wait on one child process).

    ``train_fn(state, runs_root, restart)`` trains one cell (default: by ``options.backend`` and
    ``options.jobs``). KeyboardInterrupt propagates after the cells' locks are released; whatever
    finished stays.
    """
    runs_root = Path(runs_root)
    if train_fn is None:
        train_fn = _default_train_fn(options, states)
    summary = Summary(list(states))
    t0 = time.monotonic()
    # several torchrun nodes: node 0 decides, the others launch what it tells them
    nodes = (NodeDecisions(options.nodes, states)
             if options.nodes is not None and options.nodes.nnodes > 1 else None)
    if options.follower:
        todo = list(range(len(states)))
    else:
        todo = [i for i, s in enumerate(states) if decide(s, options) != "skip"]
        for i in sorted(set(range(len(states))) - set(todo)) if nodes is not None else ():
            nodes.tell(i, "skip")  # type: ignore[union-attr]
    stop = threading.Event()
    guard = threading.Lock()  # summary and progress, when cells run in threads

    def one(i: int) -> None:
        if stop.is_set():
            return
        state = states[i]
        if nodes is not None and options.follower:
            action = nodes.ask(i)
            if action == "skip":  # node 0 does not launch it
                state.refresh(options.stale_after_s)
                summary.actions[i] = "skipped"
                return
            lock: Any = _NoLock()
        else:
            action = decide(state, options)
            lock = state.lock(options.stale_after_s)
        if not lock.acquire():
            state.refresh(options.stale_after_s)
            summary.actions[i] = "locked"
            if nodes is not None:
                nodes.tell(i, "skip")
            return
        try:
            if not options.follower:
                state.refresh(options.stale_after_s, own_lock=True)
                if state.status == "running":  # `srv train` by hand
                    summary.actions[i] = "locked"
                elif decide(state, options) == "skip":  # another worker finished it meanwhile
                    summary.actions[i] = "skipped"
                if nodes is not None:
                    nodes.tell(i, "skip" if i in summary.actions else action)
                if i in summary.actions:
                    return
            if progress is not None:
                with guard:
                    progress.start_cell(i, state)
            started = time.monotonic()
            state.clear_failure()
            try:
                out = train_fn(state, runs_root, action == "restart")
            except KeyboardInterrupt:
                raise
            except SrvError as err:
                out = Outcome("failed", str(err))
            except Exception as err:  # a crash in one cell must not stop the grid
                out = Outcome("failed", f"{type(err).__name__}: {err}")
            state.refresh(options.stale_after_s, own_lock=True)
            with guard:
                if out.status == "failed":
                    if state.status in ("done", "diverged"):  # finished, then a rank crashed
                        summary.warnings.append((state, out.reason or "failed"))
                    else:
                        state.mark_failed(out.reason or "failed")
                        state.status = "failed"
                        state.info["reason"] = out.reason
                        summary.failures.append((state, out.reason or "failed"))
                summary.actions[i] = "trained"
                if progress is not None:
                    progress.end_cell(i, state, time.monotonic() - started)
                n_fail = len(summary.failures)
                if n_fail and not options.follower and (  # a follower stops when node 0 does
                        options.fail_fast or (options.max_failures is not None
                                              and n_fail >= options.max_failures)):
                    summary.stopped_early = True
                    stop.set()
        finally:
            lock.release()

    if progress is not None:
        progress.begin(summary.states, todo)
    try:
        jobs = options.jobs if options.backend == "local" else 1
        if jobs <= 1:
            for i in todo:
                one(i)
                if stop.is_set():
                    break
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="cell") as pool:
                futures = [pool.submit(one, i) for i in todo]
                try:
                    for future in futures:
                        future.result()
                except BaseException:
                    stop.set()
                    for future in futures:
                        future.cancel()
                    raise
    finally:
        if nodes is not None:
            nodes.close()
        summary.seconds = time.monotonic() - t0
        if progress is not None:
            progress.close()
    return summary


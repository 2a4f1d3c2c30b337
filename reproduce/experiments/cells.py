"""The cells of a grid and where each one stands: its status, read from its run directory (the
engine's ``status.json`` / ``result.json``), its lock and srv ablate's own failure record.

One status vocabulary: a cell's status is its run's status
(:data:`reproduce.training.runs.STATUSES`, written by the engine) mapped by :data:`FROM_RUN`,
plus the two a run directory cannot say of itself: ``pending`` (never started) and ``partial``
(started, then stopped or killed: resumable from ``last.pt``). So a cell is ``pending``,
``partial``, ``running`` (a live worker holds its lock), ``done`` (``result.json``), ``diverged``
(a result: non-finite loss, see the engine) or ``failed``.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError
from reproduce.experiments.locks import LOCK_DIR, STALE_AFTER_S, CellLock, process_alive
from reproduce.recipes.grids import Cell, Grid
from reproduce.training.runs import STATUSES as RUN_STATUSES
from reproduce.training.runs import read_json
from reproduce.utils import cache

__all__ = ["STATUSES", "RUN_STATUSES", "FROM_RUN", "FAILED_DIR", "CellState", "inspect_run", "plan",
           "check_cells"]

#: a run's status (``status.json``, one of :data:`RUN_STATUSES`) -> its cell's status, unless
#: the run stopped before its end (then the cell is ``partial``: see :func:`inspect_run`)
FROM_RUN = {"running": "running", "completed": "done", "diverged": "diverged",
            "failed": "failed", "interrupted": "partial"}
STATUSES = tuple(dict.fromkeys(("pending", "partial", *FROM_RUN.values())))
FAILED_DIR = ".failed"  # srv ablate's own record of a cell whose training raised


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


def inspect_run(run_dir: Path, lock: CellLock | None = None,
                stale_after_s: float = STALE_AFTER_S,
                failure: Path | None = None) -> tuple[str, dict[str, Any]]:
    """The status of one cell's run directory (see :data:`STATUSES`) and its details
    (``epoch``, ``step``, ``reason``, ``top1``, ``holder``).

    ``failure`` is srv ablate's record of a cell whose training raised before the engine could
    say so (bad input, a crash before the run directory existed); it counts while it is newer
    than the run's ``status.json``.
    """
    result = read_json(run_dir / "result.json")
    if result is not None:
        return "done", {"top1": result.get("top1"), "epoch": result.get("epochs"),
                        "result": result}
    holder = lock.holder() if lock is not None else None
    status = read_json(run_dir / "status.json") or {}
    info = {"epoch": status.get("epoch", 0), "step": status.get("step", 0),
            "reason": status.get("reason")}
    if holder is not None:
        return "running", {**info, "holder": holder}
    if failure is not None:
        marked, touched = _mtime(failure), _mtime(run_dir / "status.json")
        if marked is not None and (touched is None or touched <= marked):
            record = read_json(failure) or {}
            return "failed", {**info, "reason": record.get("reason")}
    state = status.get("status")
    if state not in FROM_RUN:  # no status.json yet
        return ("partial" if (run_dir / "last.pt").exists() else "pending"), info
    if (state == "completed"  # without result.json: the engine finishes it
            or state == "interrupted"  # Ctrl-C (older runs: failed, reason interrupted)
            or (state == "failed" and status.get("reason") == "interrupted")
            or (state == "running" and not _alive(run_dir, status, stale_after_s))):
        return "partial", info  # stopped before its end: resumable from last.pt
    if state == "running":
        return "running", {**info, "holder": {"pid": status.get("pid"),
                                              "host": status.get("host")}}
    return FROM_RUN[state], info


def _alive(run_dir: Path, status: dict[str, Any], stale_after_s: float) -> bool:
    """Whether the process a ``running`` status names still runs (another host: whether its
    status file is fresher than ``stale_after_s``); this very process's own status counts as
    stopped (a cell this process trains is under its lock instead)."""
    if status.get("pid") == os.getpid() and status.get("host") == socket.gethostname():
        return False
    alive = process_alive(status.get("pid"), status.get("host"))
    if alive is None:
        try:
            age = time.time() - (run_dir / "status.json").stat().st_mtime
        except FileNotFoundError:
            age = float("inf")
        alive = age < stale_after_s
    return alive


@dataclass
class CellState:
    """A cell, its resolved config and where its run stands."""

    cell: Cell
    cfg: Any  # reproduce.training.config.RunConfig
    run_dir: Path
    lock_path: Path
    status: str = "pending"
    info: dict[str, Any] = field(default_factory=dict)
    #: updates per epoch, known once :func:`check_cells` has checked the cell (for its cost)
    steps_per_epoch: int | None = None

    @property
    def failure_path(self) -> Path:
        return self.lock_path.parent.parent / FAILED_DIR / f"{self.cfg.run_name}.json"

    def mark_failed(self, reason: str) -> None:
        """Record a failure the engine could not write (atomic, in ``<runs>/.failed/``)."""
        from reproduce.training.runs import atomic_write_json

        atomic_write_json(self.failure_path, {"reason": reason, "cell": self.cell.describe(),
                                              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})

    def clear_failure(self) -> None:
        self.failure_path.unlink(missing_ok=True)

    @property
    def epochs(self) -> int:
        return int(self.cfg.recipe.epochs)

    def lock(self, stale_after_s: float = STALE_AFTER_S) -> CellLock:
        return CellLock(self.lock_path, stale_after_s=stale_after_s, what=self.cell.describe())

    def refresh(self, stale_after_s: float = STALE_AFTER_S, own_lock: bool = False
                ) -> CellState:
        """Re-read the status (``own_lock``: this process holds the cell's lock, ignore it)."""
        lock = None if own_lock else self.lock(stale_after_s)
        self.status, self.info = inspect_run(self.run_dir, lock, stale_after_s,
                                             self.failure_path)
        return self

    def detail(self) -> str:
        """``e4/15``, ``top-1 97.8``, ``div@e3``, the failure reason ..."""
        s, i = self.status, self.info
        if s == "done":
            top1 = i.get("top1")
            return f"top-1 {top1:.2f}" if isinstance(top1, int | float) else ""
        if s == "diverged":
            return f"div@e{i.get('epoch', '?')}"
        if s in ("partial", "running"):
            text = f"e{i.get('epoch', 0)}/{self.epochs}"
            holder = i.get("holder")
            if s == "running" and holder:
                text += f" (pid {holder.get('pid')} on {holder.get('host')})"
            return text
        if s == "failed":
            return str(i.get("reason") or "").replace(str(self.run_dir), "run dir")[:100]
        return ""


def plan(grid: Grid, runs_root: Path | str, stale_after_s: float = STALE_AFTER_S,
         resolve: Callable[..., Any] | None = None) -> list[CellState]:
    """Resolve every cell's config (bad keys and models fail here, before any training) and read
    its status."""
    if resolve is None:
        from reproduce.training.config import resolve_config as resolve
    runs_root = Path(runs_root)
    states = []
    for cell in grid.cells():
        cfg = resolve(cell.model, cell.recipe, {**cell.override_dict, "seed": cell.seed})
        state = CellState(cell, cfg, runs_root / cfg.run_name,
                          runs_root / LOCK_DIR / f"{cfg.run_name}.lock")
        states.append(state.refresh(stale_after_s))
    names = Counter(s.cfg.run_name for s in states)
    dupes = [n for n, c in names.items() if c > 1]
    if dupes:
        raise SrvError(f"grid {grid.name!r}: cells {', '.join(dupes)} resolve to the same run "
                       f"(two axis values give the same config); fix the grid file")
    return states


def check_cells(states: Sequence[CellState], world_size: int = 1,
                models: dict[Any, Any] | None = None) -> list[tuple[CellState, str]]:
    """Build what each unfinished cell can build without training
    (:func:`~reproduce.training.builders.check_runnable`: the engine's refusals, the model on the
    meta device, optimizer, schedule, EMA, transforms); returns the cells that could not start,
    with the reason. Models are built once per shape and a data folder is listed once, so a
    128-sample grid checks in seconds. A cell whose build passed before under the same code,
    config, world size and training-set size is not built again (srv's cache,
    :mod:`reproduce.utils.cache`): a repeated dry run does not import timm. The data checks run
    every time."""
    from reproduce.training.builders import build_parts, check_data

    models = {} if models is None else models  # meta models by shape, shareable between grids
    folders: set[str] = set()  # data folders whose layout passed the check
    bad = []
    for state in states:
        if state.status in ("done", "diverged"):
            continue  # nothing left to start
        try:
            check_data(state.cfg, folders)
            key = _check_key(state.cfg, world_size)
            spe = cache.load(CHECK_CACHE, key)
            if spe is None:
                spe = build_parts(state.cfg, world_size, device="meta",
                                  models=models).steps_per_epoch
                cache.store(CHECK_CACHE, key, spe)  # only a build that passed is remembered
            state.steps_per_epoch = int(spe)
        except Exception as err:  # noqa: BLE001  (any reason the run would not start)
            reason = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
            if not isinstance(err, SrvError):
                reason = f"{type(err).__name__}: {reason}"
            bad.append((state, reason))
    return bad


#: srv's cache kind for cells whose meta build passed
CHECK_CACHE = "cell-check"


@lru_cache(maxsize=1)
def _package_version() -> str:
    """The code version of the whole package and the libraries a build depends on."""
    package = Path(__file__).resolve().parent.parent
    return cache.code_version(package.rglob("*.py"), ("torch", "timm", "torchvision"))


def _check_key(cfg: Any, world_size: int) -> dict[str, Any]:
    """The cache key of a cell's meta build: code, every config value, world size and the
    training-set size (a data folder that grew changes the updates per epoch)."""
    from reproduce.training.builders import train_size

    return cache.json_key({"code": _package_version(), "config": cfg.to_dict(),
                           "world_size": world_size, "train": train_size(cfg.recipe)[0]})

"""Running a grid: the status of every cell, a lock per cell, and three backends.

* **Status** of a cell comes from its run directory (written by the engine) and its lock:
  ``pending`` (never started), ``partial`` (started, stopped or killed: resumable from
  ``last.pt``), ``running`` (a live worker holds its lock), ``done`` (``result.json``),
  ``diverged`` (a result: non-finite loss, see the engine) and ``failed``.
* **Scheduling**: finished and diverged cells are skipped, partial ones resume (the engine's
  auto-resume), failed ones rerun only with ``retry_failed``; a failing cell does not stop the
  grid unless ``fail_fast`` / ``max_failures`` say so.
* **Locks**: ``<runs_root>/.locks/<run name>.lock``, created with ``O_EXCL`` and holding the
  owner's pid, host, process start time and SLURM job. A lock is stale when its process is dead
  on this host, when it belongs to this very SLURM job (a requeued job takes its cell back), or
  when its heartbeat (the file's mtime, touched every minute) is older than ``stale_after_s``.
  So two workers - two shells, two array tasks - never run the same cell.
* **Backends**: ``local`` trains cells one after another in this process, or with ``jobs > 1``
  several at once, each an ``srv train`` child process with ``cpus // jobs`` threads (on a CPU
  two one-thread processes train small models faster than one two-thread process, where
  intra-op parallelism has little to split); ``torchrun`` launches
  ``torchrun --standalone --nproc_per_node N -m reproduce train ...`` per cell (its log goes to
  ``<runs_root>/.logs/``); ``slurm`` submits one submitit job array, each task a
  :class:`CellJob` that requeues itself on preemption or timeout and resumes from the checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError
from reproduce.recipes.grids import Cell, Grid
from reproduce.training.runs import read_json

__all__ = [
    "STATUSES",
    "CellLock",
    "check_cells",
    "CellJob",
    "CellState",
    "RunOptions",
    "Summary",
    "inspect_run",
    "plan",
    "run_grid",
    "submit_slurm",
]

STATUSES = ("pending", "partial", "running", "done", "diverged", "failed")
LOCK_DIR = ".locks"
FAILED_DIR = ".failed"  # srv ablate's own record of a cell whose training raised
LOG_DIR = ".logs"
SUBMITIT_DIR = ".submitit"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 15 * 60.0


# --- processes and locks -------------------------------------------------------------------------


def _proc_start(pid: int) -> str | None:
    """The start time of a process (Linux ``/proc``), to tell a reused pid from the original."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()[19]


def process_alive(pid: int | None, host: str | None, start: str | None = None) -> bool | None:
    """True / False when ``pid`` on ``host`` is / is not running; None when it can't be known
    (another host)."""
    if not pid or not host:
        return False
    if host != socket.gethostname():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start is not None:
        now = _proc_start(int(pid))
        if now is not None and now != start:
            return False
    return True


def _slurm_task() -> str | None:
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if task else job


class CellLock:
    """An exclusive lock file for one cell (see the module docstring)."""

    def __init__(self, path: Path, stale_after_s: float = STALE_AFTER_S,
                 heartbeat_s: float = HEARTBEAT_S, what: str = "") -> None:
        self.path = Path(path)
        self.stale_after_s = stale_after_s
        self.heartbeat_s = heartbeat_s
        self.what = what
        self._held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> dict[str, Any] | None:
        """The holder's record, ``{}`` for an unreadable file, None when there is no lock."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def _age(self) -> float:
        try:
            return time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def is_stale(self, holder: dict[str, Any] | None = None) -> bool:
        holder = self.read() if holder is None else holder
        if holder is None:
            return False
        if not holder:  # half-written (crash between create and write): give it a minute
            return self._age() > 60.0
        task = _slurm_task()
        if task is not None and holder.get("slurm") == task:
            return True  # this very SLURM task, requeued: the cell is ours again
        alive = process_alive(holder.get("pid"), holder.get("host"), holder.get("pid_start"))
        if alive is None:
            return self._age() > self.stale_after_s
        return not alive

    def holder(self) -> dict[str, Any] | None:
        """The live holder's record, or None when the cell is free (no lock or a stale one)."""
        holder = self.read()
        if holder is None or self.is_stale(holder):
            return None
        return holder

    def _break_stale(self) -> None:
        """Remove a stale lock, guarded so two workers can't both break and re-create it."""
        guard = self.path.with_name(self.path.name + ".break")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > 60.0:
                    guard.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            return
        os.close(fd)
        try:
            if self.is_stale():
                self.path.unlink(missing_ok=True)
        finally:
            guard.unlink(missing_ok=True)

    def acquire(self) -> bool:
        """Take the lock; False when a live worker holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self.is_stale():
                    self._break_stale()
                    continue
                return False
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "pid_start": _proc_start(os.getpid()), "slurm": _slurm_task(),
                      "cell": self.what, "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            self._held = True
            self._stop.clear()
            self._thread = threading.Thread(target=self._beat, daemon=True,
                                            name=f"lock-{self.path.name}")
            self._thread.start()
            return True
        return False

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        if not self._held:
            return
        self._stop.set()
        holder = self.read() or {}
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        self._held = False

    def __enter__(self) -> CellLock:
        if not self.acquire():
            raise SrvError(f"cell {self.what} is locked by another worker ({self.path})")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


# --- cell status ---------------------------------------------------------------------------------



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
    if state == "diverged":
        return "diverged", info
    if state == "failed":
        # an interrupted run (Ctrl-C) is resumable, not a failure
        return ("partial" if status.get("reason") == "interrupted" else "failed"), info
    if state == "running":
        mine = status.get("pid") == os.getpid() and status.get("host") == socket.gethostname()
        alive = False if mine else process_alive(status.get("pid"), status.get("host"))
        if alive is None:
            try:
                age = time.time() - (run_dir / "status.json").stat().st_mtime
            except FileNotFoundError:
                age = float("inf")
            alive = age < stale_after_s
        if alive:
            return "running", {**info, "holder": {"pid": status.get("pid"),
                                                  "host": status.get("host")}}
        return "partial", info
    if state == "completed" or (run_dir / "last.pt").exists():
        return "partial", info  # completed without result.json: the engine finishes it
    return "pending", info


@dataclass
class CellState:
    """A cell, its resolved config and where its run stands."""

    cell: Cell
    cfg: Any  # reproduce.training.config.RunConfig
    run_dir: Path
    lock_path: Path
    status: str = "pending"
    info: dict[str, Any] = field(default_factory=dict)

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
    (:func:`~reproduce.training.runnable.check_runnable`: the engine's refusals, the model on the
    meta device, optimizer, schedule, EMA, transforms); returns the cells that could not start,
    with the reason. Models are built once per shape and a data folder is listed once, so a
    128-sample grid checks in seconds."""
    from reproduce.training.runnable import check_runnable

    models = {} if models is None else models  # meta models by shape, shareable between grids
    folders: set[str] = set()  # data folders whose layout passed the check
    bad = []
    for state in states:
        if state.status in ("done", "diverged"):
            continue  # nothing left to start
        try:
            check_runnable(state.cfg, world_size, models, folders)
        except Exception as err:  # noqa: BLE001  (any reason the run would not start)
            reason = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
            if not isinstance(err, SrvError):
                reason = f"{type(err).__name__}: {reason}"
            bad.append((state, reason))
    return bad


# --- backends ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    status: str  # completed | diverged | failed | skipped
    reason: str | None = None


def run_local(state: CellState, runs_root: Path, restart: bool) -> Outcome:
    """Train the cell in this process (the engine resumes a partial run)."""
    from reproduce.training.engine import train

    out = train(state.cfg, runs_root=runs_root, restart=restart, progress=False)
    return Outcome(out.status, out.reason)


def torchrun_command(state: CellState, runs_root: Path, nproc: int, restart: bool) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m reproduce train``:
    :func:`train_command` under torchrun."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", *train_command(state, runs_root, restart)[1:]]


def train_command(state: CellState, runs_root: Path, restart: bool) -> list[str]:
    """``python -m reproduce train MODEL --recipe R --set ...``: one cell as a child process."""
    cell = state.cell
    cmd = [sys.executable, "-m", "reproduce", "train", cell.model, "--recipe", cell.recipe,
           *cell.set_args(), "--runs-dir", str(runs_root), "--no-progress"]
    return cmd + (["--restart"] if restart else [])


def run_torchrun(state: CellState, runs_root: Path, restart: bool, nproc: int) -> Outcome:
    """One torchrun launch for the cell; its output goes to ``<runs_root>/.logs/<run>.log``."""
    return run_child(state, runs_root, torchrun_command(state, runs_root, nproc, restart))


def run_process(state: CellState, runs_root: Path, restart: bool, threads: int) -> Outcome:
    """The cell in a child ``srv train`` with ``threads`` intra-op threads (``--jobs``)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return run_child(state, runs_root, train_command(state, runs_root, restart), env)


def run_child(state: CellState, runs_root: Path, cmd: list[str],
              env: dict[str, str] | None = None) -> Outcome:
    """Run ``cmd`` (an ``srv train`` of the cell), log to ``<runs_root>/.logs/<run>.log``, and
    read its exit code: 0 completed, 3 diverged, 2 bad input, anything else failed."""
    log = runs_root / LOG_DIR / f"{state.cfg.run_name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=False)
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if not state.run_dir.exists() and code != 2:
        return Outcome("failed", f"the launched run did not write {state.run_dir} (config "
                                 f"mismatch between srv ablate and srv train?); see {log}")
    if code == 0:
        return Outcome("completed")
    if code == 3:
        return Outcome("diverged", (read_json(state.run_dir / "status.json") or {})
                       .get("reason"))
    kind = "bad input" if code == 2 else f"exit code {code}"
    return Outcome("failed", f"{kind}: {_error_line(log)} (log: {log})")


def _error_line(log: Path) -> str:
    """The most telling line of a failed launch's log."""
    import re

    lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    for pattern in (r"srv: error: .*", r"\b\w*(Error|Exception): .*"):
        for line in reversed(lines):
            m = re.search(pattern, line)
            if m:
                return m.group(0).rstrip("│ ")[:300]
    return "see the log"


# --- the local / torchrun scheduler --------------------------------------------------------------


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
    """What to do with a cell: ``run``, ``restart`` or ``skip``."""
    if state.status in ("pending", "partial"):
        return "run"
    if state.status == "failed":
        return "run" if options.retry_failed else "skip"
    if state.status == "diverged":
        return "restart" if options.retry_diverged else "skip"
    return "skip"  # done, or running elsewhere


TrainFn = Callable[[CellState, Path, bool], Outcome]


def _default_train_fn(options: RunOptions) -> TrainFn:
    if options.backend == "local":
        if options.jobs > 1:
            threads = options.threads()

            def in_child(s: CellState, r: Path, restart: bool) -> Outcome:
                return run_process(s, r, restart, threads)
            return in_child
        return run_local
    if options.backend == "torchrun":
        def launch(s: CellState, r: Path, restart: bool) -> Outcome:
            return run_torchrun(s, r, restart, options.nproc)
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
        train_fn = _default_train_fn(options)
    summary = Summary(list(states))
    t0 = time.monotonic()
    todo = [i for i, s in enumerate(states) if decide(s, options) != "skip"]
    stop = threading.Event()
    guard = threading.Lock()  # summary and progress, when cells run in threads

    def one(i: int) -> None:
        if stop.is_set():
            return
        state = states[i]
        action = decide(state, options)
        lock = state.lock(options.stale_after_s)
        if not lock.acquire():
            state.refresh(options.stale_after_s)
            summary.actions[i] = "locked"
            return
        try:
            state.refresh(options.stale_after_s, own_lock=True)
            if state.status == "running":  # `srv train` started by hand, no lock
                summary.actions[i] = "locked"
                return
            if decide(state, options) == "skip":  # another worker finished it meanwhile
                summary.actions[i] = "skipped"
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
                if n_fail and (options.fail_fast or (options.max_failures is not None
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
        summary.seconds = time.monotonic() - t0
        if progress is not None:
            progress.close()
    return summary


# --- progress ------------------------------------------------------------------------------------


class GridProgress:
    """A rich view over the whole grid on a terminal (grid bar + one bar per running cell, polled
    from its ``status.json``); plain lines otherwise."""

    def __init__(self, rich: bool | None = None, poll_s: float = 1.0) -> None:
        self.rich = sys.stdout.isatty() if rich is None else rich
        self.poll_s = poll_s
        self._progress: Any = None
        self._stop = threading.Event()
        self._cells: dict[int, tuple[Any, CellState]] = {}  # index -> (task, state)
        self._number: dict[int, int] = {}  # index -> its [k/n] in the lines
        self._thread: threading.Thread | None = None
        self._n = 0
        self._done = 0

    def begin(self, states: list[CellState], todo: list[int]) -> None:
        self._n = len(todo)
        skipped = len(states) - len(todo)
        if not self.rich:
            print(f"{len(states)} cells: {self._n} to train, {skipped} finished or skipped",
                  flush=True)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                  TimeElapsedColumn(), redirect_stdout=True,
                                  redirect_stderr=True)
        self._progress.start()
        self._grid = self._progress.add_task("grid", total=max(self._n, 1), info="")
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _say(self, line: str) -> bool:
        """Print a line above the live view (plain print off a terminal); True when live."""
        if self._progress is None:
            print(line, flush=True)
            return False
        self._progress.console.print(line, highlight=False)
        return True

    def start_cell(self, index: int, state: CellState) -> None:
        self._done += 1
        self._number[index] = self._done
        line = f"[{self._done}/{self._n}] {state.cell.describe()} ({state.status}) -> " \
               f"{state.run_dir}"
        if not self._say(line):
            return
        task = self._progress.add_task(state.cell.describe(), total=state.epochs,
                                       completed=state.info.get("epoch", 0), info="")
        self._cells[index] = (task, state)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            for task, state in list(self._cells.values()):
                status = read_json(state.run_dir / "status.json") or {}
                if self._progress is not None and "epoch" in status:
                    self._progress.update(task, completed=status["epoch"],
                                          info=f"epoch {status['epoch']}/{state.epochs}")

    def end_cell(self, index: int, state: CellState, seconds: float) -> None:
        number = self._number.get(index, self._done)
        line = f"[{number}/{self._n}] {state.cell.describe()}: {state.status} " \
               f"{state.detail()} ({seconds:.0f} s)"
        if self._say(line):
            task, _ = self._cells.pop(index, (None, None))
            if task is not None:
                self._progress.remove_task(task)
            self._progress.update(self._grid, advance=1)

    def close(self) -> None:
        self._stop.set()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


# --- SLURM through submitit ----------------------------------------------------------------------


class CellJob:
    """The callable a SLURM array task runs: train one cell under its lock.

    It has a ``checkpoint`` method, so submitit requeues it on preemption or timeout; the
    requeued task calls the engine again, which resumes from ``last.pt``. With several tasks per
    node (one per GPU) submitit's environment is exported as torchrun's variables (RANK,
    WORLD_SIZE, MASTER_ADDR, ...), and only rank 0 takes the lock.
    """

    def __init__(self, runs_root: str, stale_after_s: float = STALE_AFTER_S) -> None:
        self.runs_root = str(Path(runs_root).resolve())
        self.stale_after_s = stale_after_s
        self._lock: CellLock | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"runs_root": self.runs_root, "stale_after_s": self.stale_after_s, "_lock": None}

    def _rank(self) -> int:
        try:
            import submitit

            env = submitit.JobEnvironment()
            if env.num_tasks > 1:
                from submitit.helpers import TorchDistributedEnvironment

                TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
            return int(env.global_rank)
        except RuntimeError:  # not inside a submitit job (direct call, tests)
            return int(os.environ.get("RANK", "0"))

    def __call__(self, cell_dict: dict[str, Any], retry_diverged: bool = False
                 ) -> dict[str, Any]:
        from reproduce.training.config import resolve_config
        from reproduce.training.engine import train

        cell = Cell.from_dict(cell_dict)
        cfg = resolve_config(cell.model, cell.recipe, {**cell.override_dict, "seed": cell.seed})
        runs_root = Path(self.runs_root)
        run_dir = runs_root / cfg.run_name
        rank = self._rank()
        if rank == 0:
            self._lock = CellLock(runs_root / LOCK_DIR / f"{cfg.run_name}.lock",
                                  stale_after_s=self.stale_after_s, what=cell.describe())
            if not self._lock.acquire():
                return {"cell": cell.describe(), "status": "skipped", "run_dir": str(run_dir),
                        "reason": "locked by another worker"}
        try:
            status, _ = inspect_run(run_dir)
            out = train(cfg, runs_root=runs_root,
                        restart=retry_diverged and status == "diverged", progress=False)
            return {"cell": cell.describe(), "status": out.status, "run_dir": str(out.run_dir),
                    "reason": out.reason}
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue the same cell; the engine resumes it from its last checkpoint."""
        import submitit

        if self._lock is not None:
            self._lock.release()
            self._lock = None
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


@dataclass
class SlurmOptions:
    partition: str | None = None
    account: str | None = None
    timeout_min: int = 24 * 60
    gpus_per_task_node: int = 1  # GPUs (= tasks) per cell
    cpus_per_task: int = 10
    mem_gb: int | None = None
    parallelism: int = 16
    max_num_timeout: int = 10
    cluster: str | None = None  # None: auto (slurm when sbatch exists, else local); or debug
    extra: dict[str, Any] = field(default_factory=dict)


def submit_slurm(grid: Grid, states: Sequence[CellState], runs_root: Path | str,
                 options: RunOptions, slurm: SlurmOptions) -> list[Any]:
    """Submit the cells that need training as one job array; returns the submitit jobs.

    The submitit folder is ``<runs_root>/.submitit/<grid>/``: it must be on a file system the
    compute nodes share (so must ``runs_root``).
    """
    import submitit

    runs_root = Path(runs_root).resolve()
    todo = [s for s in states if decide(s, options) != "skip"]
    if not todo:
        return []
    folder = runs_root / SUBMITIT_DIR / grid.name / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=slurm.cluster,
                                     slurm_max_num_timeout=slurm.max_num_timeout)
    params: dict[str, Any] = dict(
        name=f"srv-{grid.name}", timeout_min=slurm.timeout_min,
        tasks_per_node=slurm.gpus_per_task_node, cpus_per_task=slurm.cpus_per_task,
        slurm_array_parallelism=slurm.parallelism,
    )
    if executor.cluster == "slurm":
        params["gpus_per_node"] = slurm.gpus_per_task_node
        if slurm.partition:
            params["slurm_partition"] = slurm.partition
        if slurm.account:
            params["slurm_account"] = slurm.account
        if slurm.mem_gb:
            params["mem_gb"] = slurm.mem_gb
        params.update(slurm.extra)
    elif executor.cluster == "local":
        params = {"name": params["name"], "timeout_min": slurm.timeout_min,
                  "tasks_per_node": 1}
    else:  # debug: runs in this process when results are asked for
        params = {"name": params["name"], "timeout_min": slurm.timeout_min}
    executor.update_parameters(**params)
    job = CellJob(str(runs_root), stale_after_s=options.stale_after_s)
    cells = [s.cell.to_dict() for s in todo]
    flags = [options.retry_diverged] * len(cells)
    return list(executor.map_array(job, cells, flags))

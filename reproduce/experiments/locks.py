"""A lock per cell, so two workers (two shells, two SLURM array tasks) never train the same cell.

``<runs_root>/.locks/<run name>.lock``, created with ``O_EXCL`` and holding the owner's pid, host,
process start time and SLURM job. A lock is stale when its process is dead on this host, when it
belongs to this very SLURM job (a requeued job takes its cell back), or when its heartbeat (the
file's mtime, touched every minute) is older than ``stale_after_s``.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError

__all__ = ["LOCK_DIR", "HEARTBEAT_S", "STALE_AFTER_S", "CellLock", "process_alive"]

LOCK_DIR = ".locks"
HEARTBEAT_S = 60.0
STALE_AFTER_S = 15 * 60.0


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (Linux), None where unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def _proc_start(pid: int) -> str | None:
    """The start time of a process (Linux ``/proc``), to tell a reused pid from the original."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


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
    fields = _proc_stat(int(pid))
    if fields and fields[0] in ("Z", "X"):
        # killed, not yet reaped: a container whose init does not reap orphans keeps a killed
        # rank's pid answering signals; it runs nothing and holds nothing
        return False
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


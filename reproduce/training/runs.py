"""Run directories: ``runs/<name>-<hash>/`` and the files in them, all written atomically
(:mod:`reproduce.utils.atomic`; its helpers are re-exported here).

Layout::

    config.json    the resolved config (RunConfig.to_dict()) and its derived values
    env.json       versions, git commit, devices, host, command line
    status.json    {"status": running|completed|failed|diverged|interrupted, "epoch", "step",
                   "reason", ...} (interrupted: Ctrl-C; rerunning the command resumes it)
    metrics.jsonl  one JSON object per finished epoch
    last.pt        checkpoint after every epoch (model, optimizer, scheduler, scaler, EMA, RNG)
    best.pt        the weights with the best val top-1 so far
    result.json    only once the run completed

Checkpoints hold tensors and plain Python types only, so ``torch.load(weights_only=True)`` works.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from reproduce.utils.atomic import atomic_torch_save, atomic_write_json, atomic_write_text

__all__ = ["RunDir", "atomic_write_text", "atomic_write_json", "atomic_torch_save", "read_json",
           "git_state", "environment", "STATUSES"]

STATUSES = ("running", "completed", "failed", "diverged", "interrupted")
PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout (reproduce/training/runs.py)


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's contents, or None when it is missing or unreadable (a status file of a run
    on another host may be mid-copy on a network file system)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def _git(*args: str) -> str | None:
    """Ask git about the source checkout srv runs from; None for an installed copy (whose
    folder may sit inside some other repository, e.g. a venv in a project clone)."""
    from reproduce.utils.resources import source_root

    if source_root() is None:
        return None
    try:
        out = subprocess.run(["git", *args], cwd=PACKAGE_ROOT, capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _build_info() -> dict[str, Any]:
    """The commit an installed (non-editable) srv was built from (setup.py writes it)."""
    return read_json(Path(__file__).resolve().parents[1] / "_build_info.json") or {}


@cache
def git_state() -> dict[str, Any]:
    """The code version: git commit of the srv checkout and whether it has local changes; for
    an installed srv, the commit its package was built from."""
    commit = _git("rev-parse", "HEAD")
    dirty = None
    if commit is not None:
        status = _git("status", "--porcelain", "--untracked-files=no", "--", "reproduce")
        dirty = bool(status)
    else:
        built = _build_info()
        commit, dirty = built.get("git_commit"), built.get("git_dirty")
    from reproduce import __version__

    return {"git_commit": commit, "git_dirty": dirty, "code_version": __version__}


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows): figures
    from machines of one kind differ up to 2x, so every CPU figure names its CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def environment(device: Any = None, world_size: int = 1) -> dict[str, Any]:
    """Versions, devices, host and command line, for ``env.json``."""
    import timm
    import torch

    env: dict[str, Any] = {
        **git_state(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.version.cuda,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_threads": torch.get_num_threads(),
        "world_size": world_size,
        "device": str(device),
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if torch.cuda.is_available():
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env


class RunDir:
    """One run's directory and its files."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # paths
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def result_path(self) -> Path:
        return self.path / "result.json"

    @property
    def last_ckpt(self) -> Path:
        return self.path / "last.pt"

    @property
    def best_ckpt(self) -> Path:
        return self.path / "best.pt"

    # reading
    def read_json(self, name: str) -> dict[str, Any] | None:
        return read_json(self.path / name)

    def config(self) -> dict[str, Any] | None:
        return self.read_json("config.json")

    def status(self) -> dict[str, Any] | None:
        return self.read_json("status.json")

    def result(self) -> dict[str, Any] | None:
        return self.read_json("result.json")

    def metrics(self) -> list[dict[str, Any]]:
        """The per-epoch rows; a line cut by a kill (the last one) is left out."""
        if not self.metrics_path.exists():
            return []
        rows = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows

    # writing
    def write_status(self, status: str, epoch: int, step: int, reason: str | None = None,
                     **extra: Any) -> None:
        assert status in STATUSES, status
        atomic_write_json(self.status_path, {
            "status": status, "epoch": epoch, "step": step, "reason": reason,
            "pid": os.getpid(), "host": socket.gethostname(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra,
        })

    def write_metrics(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rewrite ``metrics.jsonl`` with ``rows`` (atomic; used to append and to truncate)."""
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows)
        atomic_write_text(self.metrics_path, text)

    def truncate_metrics(self, epochs_done: int) -> None:
        """Drop rows of epochs after the checkpoint (a resumed run recomputes them)."""
        rows = self.metrics()
        kept = [r for r in rows if r.get("epoch", 0) <= epochs_done]
        if len(kept) != len(rows):
            self.write_metrics(kept)

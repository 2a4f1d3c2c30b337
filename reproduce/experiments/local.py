"""The local backend: a cell trained in this process, or (``--jobs N``) in a child ``srv train``
process with ``cpus // jobs`` intra-op threads (on a CPU two one-thread processes train small
models faster than one two-thread process, where intra-op parallelism has little to split) and,
on a machine with GPUs, a GPU of its own through ``CUDA_VISIBLE_DEVICES`` (the variable CUDA
itself reads, so the child's ``cuda:0`` is its GPU). A child's output goes to
``<runs_root>/.logs/<run>.log``; its exit code says how the run ended.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reproduce.errors import SrvError
from reproduce.experiments.cells import CellState
from reproduce.training.runs import read_json

__all__ = ["LOG_DIR", "Outcome", "run_local", "train_command", "run_process", "run_child",
           "visible_gpus", "local_gpus"]

LOG_DIR = ".logs"


@dataclass
class Outcome:
    status: str  # completed | diverged | failed | skipped
    reason: str | None = None


def run_local(state: CellState, runs_root: Path, restart: bool) -> Outcome:
    """Train the cell in this process (the engine resumes a partial run)."""
    from reproduce.training.engine import train

    out = train(state.cfg, runs_root=runs_root, restart=restart, progress=False)
    return Outcome(out.status, out.reason)



def train_command(state: CellState, runs_root: Path, restart: bool) -> list[str]:
    """``python -m reproduce train MODEL --recipe R --set ...``: one cell as a child process."""
    cell = state.cell
    cmd = [sys.executable, "-m", "reproduce", "train", cell.model, "--recipe", cell.recipe,
           *cell.set_args(), "--runs-dir", str(runs_root), "--no-progress"]
    return cmd + (["--restart"] if restart else [])




def run_process(state: CellState, runs_root: Path, restart: bool, threads: int,
                gpu: str | None = None) -> Outcome:
    """The cell in a child ``srv train`` with ``threads`` intra-op threads (``--jobs``) and, when
    given, only ``gpu`` visible (``CUDA_VISIBLE_DEVICES``: the child trains on its cuda:0)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    return run_child(state, runs_root, train_command(state, runs_root, restart), env)


def visible_gpus() -> list[str]:
    """The GPUs this process can hand to its children, as ``CUDA_VISIBLE_DEVICES`` names them:
    that variable's entries when it is set (indices or UUIDs), else ``0 .. count-1``."""
    import torch

    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    shown = os.environ.get("CUDA_VISIBLE_DEVICES")
    if shown is None:
        return [str(i) for i in range(count)]
    return [d.strip() for d in shown.split(",") if d.strip()][:count]


def local_gpus(states: Sequence[CellState], jobs: int, share: bool = False) -> tuple[str, ...]:
    """The GPUs ``jobs`` child processes share out, one each (none for one job, which trains in
    this process on the engine's device, nor when no GPU is visible or every cell is set to the
    CPU). More jobs than GPUs is refused unless ``share`` (then cells share GPUs round robin)."""
    if jobs <= 1 or all(s.cfg.recipe.device == "cpu" for s in states):
        return ()
    gpus = visible_gpus()
    if gpus and jobs > len(gpus) and not share:
        raise SrvError(f"--jobs {jobs} but {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} "
                       f"visible ({','.join(gpus)}): each cell trains on a GPU of its own; use "
                       f"--jobs {len(gpus)}, or --share-gpus to put several cells on one GPU")
    return tuple(gpus)


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


"""Launching grids on real clusters, on CPU: the SLURM cell lock told to every rank, pre-set
torchrun variables in a SLURM task, and a GPU of its own for each local job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_ablate import tiny_grid
from typer.testing import CliRunner

from reproduce import experiments as ab
from reproduce.cli import app
from reproduce.errors import SrvError
from reproduce.experiments import cells, local, slurm
from reproduce.recipes.grids import load_grid
from reproduce.training import runs

runner = CliRunner()


def test_one_status_vocabulary() -> None:
    """A cell's statuses are the engine's run statuses mapped, plus pending and partial."""
    assert set(cells.FROM_RUN) == set(runs.STATUSES)
    assert ab.STATUSES == ("pending", "partial", "running", "done", "diverged", "failed")


# --- SLURM tasks ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_task_env(rank: int, ntasks: int, job: str = "4242", task: str = "0") -> dict[str, str]:
    """What SLURM and submitit set for one task of an array job on this host."""
    env = {k: v for k, v in os.environ.items()
           if k not in slurm.TORCH_VARS and not k.startswith("SLURM_")}
    return {**env, "SUBMITIT_EXECUTOR": "slurm", "SLURM_JOB_ID": f"{job}1",
            "SLURM_ARRAY_JOB_ID": job, "SLURM_ARRAY_TASK_ID": task,
            "SLURM_NTASKS": str(ntasks), "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0",
            "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
            "SLURM_JOB_NODELIST": "localhost"}


def _run_ranks(runs_root: Path, cell: dict, subprocess_env: dict[str, str]) -> list[dict]:
    """Ranks 0 and 1 of one simulated SLURM array task running :class:`CellJob` on ``cell``."""
    code = ("import json, os, sys; from reproduce.experiments.slurm import CellJob; "
            "out = CellJob(sys.argv[1])(json.loads(sys.argv[2])); "
            "print(json.dumps({**out, 'rank': os.environ.get('RANK')}))")
    port = str(_free_port())
    procs = [subprocess.Popen(
        [sys.executable, "-c", code, str(runs_root), json.dumps(cell)],
        env={**_slurm_task_env(rank, 2), "MASTER_PORT": port,
             **{k: subprocess_env[k] for k in ("PYTHONPATH", "OMP_NUM_THREADS")}},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    outs = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a rank still waits for the cell (stranded in the process group)")
        assert proc.returncode == 0, stderr[-2000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    return outs


def test_a_held_cell_lock_ends_every_slurm_rank_as_skipped(
        tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """Two tasks of one array task (ranks 0 and 1) meet a cell another worker holds: rank 0
    decides, both end promptly as skipped (rank 1 used to wait 30 min for a rank 0 that left)."""
    runs_root = tmp_path / "runs"
    (state,) = ab.plan(load_grid(tiny_grid(tmp_path), axes={"stem": ["conv"]}), runs_root)
    other = ab.CellLock(state.lock_path, what="another worker")
    assert other.acquire()  # this (live) process holds the cell
    try:
        outs = _run_ranks(runs_root, state.cell.to_dict(), subprocess_env)
    finally:
        other.release()
    assert [o["status"] for o in outs] == ["skipped", "skipped"]
    assert [o["rank"] for o in outs] == ["0", "1"]  # SLURM's layout, exported to each task
    assert not state.run_dir.exists()


@pytest.mark.slow
def test_a_free_cell_is_trained_by_every_slurm_rank(
        tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """The same two ranks on a free cell: one 2-process run (the group CellJob formed for the
    lock decision is the one the engine trains in), the lock released afterwards."""
    runs_root = tmp_path / "runs"
    grid = tiny_grid(tmp_path, epochs=1, warmup_epochs=0.0)
    (state,) = ab.plan(load_grid(grid, axes={"stem": ["conv"]}), runs_root)
    outs = _run_ranks(runs_root, state.cell.to_dict(), subprocess_env)
    assert [o["status"] for o in outs] == ["completed", "completed"]
    assert json.loads((state.run_dir / "result.json").read_text())["world_size"] == 2
    assert not state.lock_path.exists()


def test_preset_torch_variables_in_a_slurm_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """submitit's export error is no longer swallowed (every task then trained as rank 0): a
    clash with SLURM's layout is one line; agreeing values are kept."""
    monkeypatch.setattr(os, "environ", {**_slurm_task_env(1, 2), "RANK": "0",
                                        "MASTER_ADDR": "10.0.0.9"})
    with pytest.raises(SrvError) as err:
        slurm.export_rank()
    text = str(err.value)
    assert "RANK=0 (SLURM's task layout says 1)" in text and "MASTER_ADDR=10.0.0.9" in text
    assert "\n" not in text and "unset MASTER_ADDR MASTER_PORT RANK" in text
    monkeypatch.setattr(os, "environ", {**_slurm_task_env(1, 2), "RANK": "1",
                                        "MASTER_PORT": "29511"})
    assert slurm.export_rank() == 1
    assert {k: os.environ[k] for k in slurm.TORCH_VARS} == {
        "MASTER_ADDR": "localhost", "MASTER_PORT": "29511", "RANK": "1", "WORLD_SIZE": "2",
        "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    # one task per cell: nothing to export, but an inherited WORLD_SIZE would still mislead
    monkeypatch.setattr(os, "environ", {**_slurm_task_env(0, 1), "WORLD_SIZE": "8"})
    with pytest.raises(SrvError, match="WORLD_SIZE=8"):
        slurm.export_rank()


def test_submitting_from_a_shell_with_a_rank_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\n'
                                    'echo "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit: a SLURM cluster
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("RANK", "3")
    result = runner.invoke(app, ["ablate", str(tiny_grid(tmp_path)), "--runs-dir",
                                 str(tmp_path / "runs"), "--backend", "slurm", "--nproc", "2"])
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("srv: error:")]
    assert "RANK set in this shell" in line and "unset RANK" in line
    assert not (tmp_path / "submitted.sh").exists()


def test_no_slurm_here_is_refused_unless_asked_for(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Without sbatch / srun on PATH submitit would train the cells on this machine (its local
    executor): the submission stops with one line; the dry run says which executor it would use;
    --slurm-cluster local runs the array here on purpose, each job in a folder of its id."""
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    grid, runs = tiny_grid(tmp_path, epochs=1, warmup_epochs=0.0), tmp_path / "runs"
    args = ["ablate", str(grid), "--runs-dir", str(runs), "--backend", "slurm", "--no-table"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("srv: error: --backend slurm: no sbatch or srun on PATH")
    assert "--slurm-cluster local" in line and not runs.exists()
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0 and "executor: submitit's SLURM executor, but no sbatch" in dry.stdout
    dry = runner.invoke(app, [*args, "--dry-run", "--slurm-cluster", "local"])
    assert "executor: submitit's local executor (--slurm-cluster local)" in dry.stdout
    # submitit's local executor, with a stand-in for the cell's training (a builtin: the job
    # is unpickled in another process): no folder is literally named %j
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    monkeypatch.setattr(slurm, "CellJob", lambda *a, **k: print)
    one = load_grid(grid, axes={"stem": ["conv"]})
    jobs = slurm.submit_slurm(one, ab.plan(one, runs), runs, ab.RunOptions(backend="slurm"),
                              slurm.SlurmOptions(cluster="local", timeout_min=5))
    assert len(jobs) == 1 and jobs[0].result() is None
    made = list((runs / ab.SUBMITIT_DIR).rglob("*"))
    assert made and not [p for p in made if "%j" in p.name]
    assert all(any(job.job_id in p.name for p in made) for job in jobs)


# --- local jobs on a GPU machine -----------------------------------------------------------------


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine whose process sees GPUs 4 and 6 (as CUDA_VISIBLE_DEVICES names them)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")


def test_local_jobs_each_get_a_gpu_of_their_own(tmp_path: Path, two_gpus: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    states = ab.plan(load_grid("stem", overrides={"img_size": 16}), tmp_path / "runs")
    in_use: set[str] = set()
    seen: list[str] = []
    guard = threading.Lock()
    both = threading.Barrier(2, timeout=30)

    def child(state: ab.CellState, runs_root: Path, cmd: list[str],
              env: dict[str, str] | None = None) -> ab.Outcome:
        gpu = (env or {})["CUDA_VISIBLE_DEVICES"]
        with guard:
            assert gpu not in in_use, f"two children on GPU {gpu}"
            in_use.add(gpu)
            seen.append(gpu)
        both.wait()  # two children run at once
        time.sleep(0.01)
        with guard:
            in_use.discard(gpu)
        return ab.Outcome("completed")

    monkeypatch.setattr(local, "run_child", child)
    summary = ab.run_grid(states, tmp_path / "runs", ab.RunOptions(jobs=2))
    assert summary.ok and len(seen) == 8 and set(seen) == {"4", "6"}
    # more jobs than GPUs: refused unless asked; CPU cells and one job take no GPU
    with pytest.raises(SrvError, match="--jobs 3 but 2 GPUs visible"):
        ab.local_gpus(states, 3)
    assert ab.local_gpus(states, 3, share=True) == ("4", "6")
    assert ab.local_gpus(states, 1) == ()
    on_cpu = ab.plan(load_grid("stem", overrides={"img_size": 16, "device": "cpu"}),
                     tmp_path / "runs")
    assert ab.local_gpus(on_cpu, 3) == ()


def test_ablate_refuses_more_jobs_than_gpus(tmp_path: Path, two_gpus: None) -> None:
    args = ["ablate", str(tiny_grid(tmp_path)), "--runs-dir", str(tmp_path / "runs"),
            "--jobs", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("srv: error:")]
    assert "--jobs 3 but 2 GPUs visible (4,6)" in line and "--share-gpus" in line
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/status.json"))


# --- several torchrun nodes ----------------------------------------------------------------------


def test_a_follower_node_launches_exactly_the_cells_node_0_launches(tmp_path: Path) -> None:
    """A cell another worker holds looks "running" to a follower node, the same as one node 0
    is launching; node 0 skips it (locked), so a follower deciding from the files would launch
    it and wait out the rendezvous. The follower must do what node 0 decided."""
    grid = load_grid("stem", overrides={"img_size": 16})
    runs_root = tmp_path / "runs"
    endpoint = f"127.0.0.1:{_free_port()}"
    held = ab.plan(grid, runs_root)[1].lock()  # another worker holds cell 1
    assert held.acquire()
    launched: dict[int, list[str]] = {0: [], 1: []}
    summaries: dict[int, ab.Summary] = {}
    errors: list[BaseException] = []

    def node(rank: int) -> None:
        states = ab.plan(grid, runs_root)

        def train_fn(state: ab.CellState, root: Path, restart: bool) -> ab.Outcome:
            launched[rank].append(state.cfg.run_name)
            return ab.Outcome("completed")

        options = ab.RunOptions(backend="torchrun", nodes=ab.Nodes(2, rank, endpoint))
        try:
            summaries[rank] = ab.run_grid(states, runs_root, options, train_fn=train_fn)
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=node, args=(rank,)) for rank in (1, 0)]  # follower first
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    held.release()
    assert not errors, errors
    names = [s.cfg.run_name for s in ab.plan(grid, runs_root)]
    assert names[1] not in launched[0]  # node 0 skipped the held cell
    assert launched[1] == launched[0] and len(launched[0]) == len(names) - 1
    assert summaries[1].actions[1] == "skipped"

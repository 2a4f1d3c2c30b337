"""srv ablate: locks, cell status, scheduling, and small grids trained end to end on CPU."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY
from test_tables import write_run
from typer.testing import CliRunner

from reproduce import experiments as ab
from reproduce.cli import app
from reproduce.experiments import local
from reproduce.recipes.grids import load_grid

runner = CliRunner()

#: a 2-cell grid of real tiny runs (digits, 16x16, 256 train images, 2 epochs: ~1 s a cell)
TINY_GRID = """
title = "Tiny stem grid"
[table]
rows = ["stem"]
[axes.stem]
key = "model"
format = "vit-mini-{{value}}"
values = ["patch", "conv"]
labels = {{ patch = "patchify", conv = "conv (scaled ReLU)" }}
[presets.mini]
recipe = "mini"
seeds = [0]
set = {{ {settings} }}
"""


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a shared 2-core box they only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_grid(tmp_path: Path, name: str = "tiny", **extra: object) -> Path:
    settings = ", ".join(f"{k} = {v!r}" for k, v in {**TINY, **extra}.items())
    path = tmp_path / f"{name}.toml"
    path.write_text(TINY_GRID.format(settings=settings))
    return path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- locks ---------------------------------------------------------------------------------------


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    a = ab.CellLock(tmp_path / "c.lock", what="cell")
    b = ab.CellLock(tmp_path / "c.lock", what="cell")
    assert a.acquire()
    holder = json.loads((tmp_path / "c.lock").read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert not b.acquire() and b.holder()["pid"] == os.getpid()
    a.release()
    assert not (tmp_path / "c.lock").exists()
    assert b.acquire()
    b.release()


def test_stale_locks_are_broken(tmp_path: Path) -> None:
    path = tmp_path / "c.lock"
    lock = ab.CellLock(path, stale_after_s=60)
    # a dead process on this host
    path.write_text(json.dumps({"pid": dead_pid(), "host": socket.gethostname()}))
    assert lock.holder() is None and lock.acquire()
    lock.release()
    # another host: held while its heartbeat is fresh, stale once it is old
    path.write_text(json.dumps({"pid": 1, "host": "gpu-node-7"}))
    assert not lock.acquire()
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert lock.acquire()
    lock.release()
    # a half-written file: held for a minute, then stale
    path.write_text("")
    assert not lock.acquire()
    os.utime(path, (old, old))
    assert lock.acquire()
    lock.release()


def test_lock_of_this_slurm_task_is_taken_back_after_requeue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.lock"
    path.write_text(json.dumps({"pid": 1, "host": "gpu-node-7", "slurm": "4242_3"}))
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    lock = ab.CellLock(path)
    assert lock.acquire()
    assert json.loads(path.read_text())["slurm"] == "4242_3"
    lock.release()


def test_heartbeat_touches_the_lock(tmp_path: Path) -> None:
    lock = ab.CellLock(tmp_path / "c.lock", heartbeat_s=0.05)
    assert lock.acquire()
    old = time.time() - 3600
    os.utime(lock.path, (old, old))
    time.sleep(0.3)
    assert time.time() - lock.path.stat().st_mtime < 60
    lock.release()


# --- status of a cell ----------------------------------------------------------------------------


def test_status_of_every_kind_of_run(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    o = {"epochs": 15, "img_size": 16}
    assert ab.inspect_run(runs / "nothing")[0] == "pending"
    done = write_run(runs, "vit-mini-patch", o, "done", 90.0)
    assert ab.inspect_run(done) == ("done", ab.inspect_run(done)[1])
    assert ab.inspect_run(done)[1]["top1"] == 90.0
    div = write_run(runs, "vit-mini-conv", o, "diverged", epoch=3)
    assert ab.inspect_run(div)[0] == "diverged" and ab.inspect_run(div)[1]["epoch"] == 3
    failed = write_run(runs, "vit-mini-xiao", o, "failed", epoch=2, reason="OSError: disk")
    assert ab.inspect_run(failed)[0] == "failed"
    interrupted = write_run(runs, "vit-mini-conv-ln", o, "failed", epoch=2, reason="interrupted")
    assert ab.inspect_run(interrupted)[0] == "partial"  # Ctrl-C: resumable, not a failure
    killed = write_run(runs, "vit-mini-conv-nobn", o, "running", epoch=4, pid=dead_pid())
    assert ab.inspect_run(killed) == ("partial", {"epoch": 4, "step": 40, "reason": None})
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        live = write_run(runs, "vit-mini-conv-linear", o, "running", epoch=1, pid=sleeper.pid)
        assert ab.inspect_run(live)[0] == "running"  # `srv train` by hand, no lock
    finally:
        sleeper.kill()
        sleeper.wait()
    remote = write_run(runs, "vit-mini-patch-bnrelu", o, "running", epoch=1, host="node-9")
    assert ab.inspect_run(remote)[0] == "running"  # fresh status from another host
    old = time.time() - 3600
    os.utime(remote / "status.json", (old, old))
    assert ab.inspect_run(remote)[0] == "partial"
    # a lock held by a live worker makes a pending cell "running"
    lock = ab.CellLock(tmp_path / "x.lock")
    other = ab.CellLock(tmp_path / "x.lock")
    assert lock.acquire()
    try:
        assert ab.inspect_run(runs / "nothing", other)[0] == "running"
    finally:
        lock.release()


# --- scheduling (a stand-in trainer writes run files; real training is tested below) -------------


class FakeTrainer:
    """Writes the engine's files for a cell: done, or fails on the cells named in ``fail``."""

    def __init__(self, fail: tuple[str, ...] = (), diverge: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[str, bool]] = []
        self.fail, self.diverge = fail, diverge

    def __call__(self, state: ab.CellState, runs_root: Path, restart: bool) -> ab.Outcome:
        name = state.cell.label_dict["stem"]
        self.calls.append((name, restart))
        if name in self.fail:
            raise RuntimeError(f"{name} broke")
        c = state.cell
        write_run(runs_root, c.model, c.override_dict,
                  "diverged" if name in self.diverge else "done", 50.0, seed=c.seed,
                  epoch=1 if name in self.diverge else None)
        return ab.Outcome("diverged" if name in self.diverge else "completed")


def _states(tmp_path: Path, **kwargs: object) -> list[ab.CellState]:
    grid = load_grid("stem", overrides={"img_size": 16}, **kwargs)
    return ab.plan(grid, tmp_path / "runs")


def test_keeps_going_past_a_failed_cell(tmp_path: Path) -> None:
    fake = FakeTrainer(fail=("conv",), diverge=("patch",))
    summary = ab.run_grid(_states(tmp_path), tmp_path / "runs", ab.RunOptions(), train_fn=fake)
    assert [c[0] for c in fake.calls] == [
        "patch", "patch-bnrelu", "conv", "conv-norelu", "conv-nobn", "conv-linear", "conv-ln",
        "xiao"]
    assert [s.cell.label_dict["stem"] for s, _ in summary.failures] == ["conv"]
    assert "RuntimeError: conv broke" in summary.failures[0][1]
    assert summary.counts() == {"done": 6, "diverged": 1, "failed": 1}
    assert not summary.ok
    assert not list((tmp_path / "runs" / ab.LOCK_DIR).glob("*.lock"))  # all released
    # second pass: nothing to do (a diverged cell is a result, a failed one waits for a retry)
    again = FakeTrainer()
    summary = ab.run_grid(_states(tmp_path), tmp_path / "runs", ab.RunOptions(), train_fn=again)
    assert again.calls == [] and summary.ok


def test_retry_failed_and_retry_diverged(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    ab.run_grid(_states(tmp_path), runs, ab.RunOptions(),
                train_fn=FakeTrainer(fail=("conv",), diverge=("patch",)))
    retry = FakeTrainer()
    ab.run_grid(_states(tmp_path), runs, ab.RunOptions(retry_failed=True), train_fn=retry)
    assert retry.calls == [("conv", False)]  # resumes (no restart)
    rediv = FakeTrainer()
    ab.run_grid(_states(tmp_path), runs, ab.RunOptions(retry_diverged=True), train_fn=rediv)
    assert rediv.calls == [("patch", True)]  # retrained from scratch


def test_fail_fast_and_max_failures(tmp_path: Path) -> None:
    fake = FakeTrainer(fail=("patch", "patch-bnrelu", "conv"))
    summary = ab.run_grid(_states(tmp_path), tmp_path / "runs", ab.RunOptions(fail_fast=True),
                          train_fn=fake)
    assert len(fake.calls) == 1 and summary.stopped_early
    fake = FakeTrainer(fail=("patch", "patch-bnrelu", "conv"))
    summary = ab.run_grid(_states(tmp_path), tmp_path / "runs",
                          ab.RunOptions(max_failures=2, retry_failed=True), train_fn=fake)
    assert len(fake.calls) == 2 and summary.stopped_early


def test_a_cell_locked_by_another_worker_is_left_alone(tmp_path: Path) -> None:
    states = _states(tmp_path, axes={"stem": ["patch", "conv"]})
    other = ab.CellLock(states[0].lock_path)
    assert other.acquire()  # another worker (same pid here, so the lock is live)
    try:
        fake = FakeTrainer()
        summary = ab.run_grid(states, tmp_path / "runs", ab.RunOptions(), train_fn=fake)
        assert fake.calls == [("conv", False)]
        assert summary.actions[0] == "locked"
        assert ab.plan(load_grid("stem", overrides={"img_size": 16},
                                 axes={"stem": ["patch"]}), tmp_path / "runs")[0].status \
            == "running"
    finally:
        other.release()


def test_torchrun_command_rebuilds_the_cell() -> None:
    grid = load_grid("stride", overrides={"img_size": 16})
    state = ab.plan(grid, Path("runs"))[1]
    cmd = ab.torchrun_command(state, Path("runs"), 4, restart=False)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert cmd[5:9] == ["-m", "reproduce", "train", "vit-mini-conv"]
    assert "stem=3s1c32,3s1c32,3s1c32,4s4;norm=bn;act=relu" in cmd
    assert "seed=0" in cmd and "img_size=16" in cmd and "--restart" not in cmd


def test_cell_job_requeues_itself_and_releases_its_lock(tmp_path: Path) -> None:
    import pickle

    from submitit.helpers import DelayedSubmission

    job = ab.CellJob(str(tmp_path / "runs"))
    job._lock = ab.CellLock(tmp_path / "runs" / ab.LOCK_DIR / "x.lock")
    assert job._lock.acquire()
    cell = load_grid("stem").cells()[0].to_dict()
    again = job.checkpoint(cell)
    assert isinstance(again, DelayedSubmission) and again.args == (cell,)
    assert job._lock is None and not (tmp_path / "runs" / ab.LOCK_DIR / "x.lock").exists()
    clone = pickle.loads(pickle.dumps(job))
    assert clone.runs_root == job.runs_root and clone._lock is None


# --- end to end on real (tiny) training ----------------------------------------------------------


def _mtimes(runs: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/last.pt")}


def test_small_grid_end_to_end(tmp_path: Path) -> None:
    grid = tiny_grid(tmp_path)
    runs, tables = tmp_path / "runs", tmp_path / "tables"
    args = ["ablate", str(grid), "--runs-dir", str(runs), "--tables-dir", str(tables)]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0 and dry.output.count(" pending ") == 2, dry.output
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "2 done (2 trained in this pass" in first.output
    md = (tables / "tiny.md").read_text()
    assert "| patchify " in md and "| conv (scaled ReLU) " in md and "Params (M)" in md
    assert "## Tiny stem grid" in first.output  # the table is printed too
    assert (tables / "tiny.png").read_bytes()[:4] == b"\x89PNG"
    results = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/result.json")}
    assert len(results) == 2
    for result in results.values():
        assert f"{result['top1']:.1f}" in md
    before = _mtimes(runs)
    # rerun: nothing is retrained
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 trained in this pass" in again.output
    assert _mtimes(runs) == before
    # delete one cell: only that cell trains again
    (conv,) = [p for p in runs.iterdir() if p.name.startswith("vit-mini-conv-")]
    for f in conv.iterdir():
        f.unlink()
    conv.rmdir()
    third = runner.invoke(app, args)
    assert third.exit_code == 0 and "1 trained in this pass" in third.output
    after = _mtimes(runs)
    patch = next(n for n in after if n.startswith("vit-mini-patch-"))
    assert after[patch] == before[patch] and conv.name in after
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.output.count(" done ") == 2
    # delete only one cell's result.json: that cell is finished again from its checkpoint
    before = _mtimes(runs)
    result = json.loads((runs / patch / "result.json").read_text())
    (runs / patch / "result.json").unlink()
    fourth = runner.invoke(app, args)
    assert fourth.exit_code == 0 and "1 trained in this pass" in fourth.output
    assert _mtimes(runs)[conv.name] == before[conv.name]
    assert json.loads((runs / patch / "result.json").read_text())["top1"] == result["top1"]


def test_a_failed_cell_does_not_stop_the_grid_and_exits_1(tmp_path: Path) -> None:
    grid = tiny_grid(tmp_path, epochs=1, warmup_epochs=0.0)
    runs = tmp_path / "runs"
    # make the patch cell fail: its run directory holds another run's config
    states = ab.plan(load_grid(grid), runs)
    (runs / states[0].cfg.run_name).mkdir(parents=True)
    (runs / states[0].cfg.run_name / "config.json").write_text(json.dumps(
        {"model": "vit-mini-patch", "seed": 123}))
    result = runner.invoke(app, ["ablate", str(grid), "--runs-dir", str(runs), "--no-table"])
    assert result.exit_code == 1, result.output
    assert "1 done" in result.output and "1 failed" in result.output
    assert "another config" in result.output and "--retry-failed" in result.output
    # a failure that happened before the engine wrote a status is remembered by srv ablate
    dry = runner.invoke(app, ["ablate", str(grid), "--runs-dir", str(runs), "--dry-run"])
    assert " failed " in dry.output and "another config" in dry.output
    again = runner.invoke(app, ["ablate", str(grid), "--runs-dir", str(runs), "--no-table"])
    assert again.exit_code == 0 and "0 trained in this pass" in again.output


def test_killed_ablate_loses_no_finished_cell_and_resumes_the_partial_one(
        tmp_path: Path, srv_cmd: list[str], subprocess_env: dict[str, str]) -> None:
    grid = tiny_grid(tmp_path, epochs=4, train_subset=512)
    runs = tmp_path / "runs"
    cmd = [*srv_cmd, "ablate", str(grid), "--runs-dir", str(runs), "--no-table"]
    proc = subprocess.Popen(cmd, env=subprocess_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    states = ab.plan(load_grid(grid), runs)
    first, second = states[0].run_dir, states[1].run_dir
    deadline = time.monotonic() + 240
    while not (second / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (first / "result.json").exists()
    assert not (second / "result.json").exists(), "killed too late: the grid had finished"
    mtime = (first / "last.pt").stat().st_mtime_ns
    dry = runner.invoke(app, ["ablate", str(grid), "--runs-dir", str(runs), "--dry-run"])
    assert " done " in dry.output and " partial " in dry.output, dry.output
    again = subprocess.run(cmd, env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming vit-mini-conv" in again.stdout and "1 trained in this pass" in again.stdout
    assert (first / "last.pt").stat().st_mtime_ns == mtime  # the finished cell was kept
    assert (second / "result.json").exists()
    rows = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


# submitit's debug executor leaves its log files open (a submitit quirk, not ours)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_slurm_backend_through_submitit_in_process(tmp_path: Path) -> None:
    """submitit's debug executor runs the array tasks in this process (no SLURM needed)."""
    grid = tiny_grid(tmp_path, epochs=1, warmup_epochs=0.0)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["ablate", str(grid), "--runs-dir", str(runs), "--backend",
                                 "slurm", "--slurm-cluster", "debug", "--wait",
                                 "--tables-dir", str(tmp_path / "tables")])
    assert result.exit_code == 0, result.output
    assert "submitted 2 cells" in result.output and "stem=conv seed=0: completed" in result.output
    assert len(list(runs.glob("*/result.json"))) == 2
    assert (tmp_path / "tables" / "tiny.md").exists()
    assert list((runs / ab.SUBMITIT_DIR / "tiny").iterdir())


def test_torchrun_backend_runs_a_cell_with_two_processes(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """One torchrun launch per cell (2 CPU processes, gloo): the child lands in the cell's run
    directory, so the options srv ablate passes rebuild exactly the cell's config."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    grid = tiny_grid(tmp_path, epochs=1, warmup_epochs=0.0)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["ablate", str(grid), "--runs-dir", str(runs), "--no-table",
                                 "--backend", "torchrun", "--nproc", "2", "--axis",
                                 "stem=conv"])
    assert result.exit_code == 0, result.output
    (state,) = ab.plan(load_grid(grid, axes={"stem": ["conv"]}), runs)
    assert state.status == "done"
    assert json.loads((state.run_dir / "config.json").read_text())["derived"]["world_size"] == 2
    log = (runs / ab.LOG_DIR / f"{state.cfg.run_name}.log").read_text()
    assert "--nproc_per_node=2" in log


def test_progress_views_over_the_grid(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    progress = ab.GridProgress(rich=True, poll_s=0.01)
    summary = ab.run_grid(_states(tmp_path, axes={"stem": ["patch", "conv"]}),
                          tmp_path / "runs", ab.RunOptions(), train_fn=FakeTrainer(),
                          progress=progress)
    assert summary.ok and summary.counts() == {"done": 2}
    assert progress._progress is None  # the live view was stopped
    capsys.readouterr()
    # off a terminal: plain lines, no carriage returns
    summary = ab.run_grid(_states(tmp_path / "b", axes={"stem": ["patch", "conv"]}),
                          tmp_path / "b" / "runs", ab.RunOptions(), train_fn=FakeTrainer(),
                          progress=ab.GridProgress(rich=False))
    out = capsys.readouterr().out
    assert "2 cells: 2 to train, 0 finished or skipped" in out
    assert "[2/2] stem=conv seed=0: done top-1 50.00" in out and "\r" not in out


def test_slurm_job_array_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-ins for sbatch / srun (no cluster here): the array that submitit would submit."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\n'
                                    'echo "Submitted batch job 4242"\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    grid = tiny_grid(tmp_path)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["ablate", str(grid), "--runs-dir", str(runs), "--backend",
                                 "slurm", "--nproc", "2", "--slurm-partition", "gpu",
                                 "--slurm-time", "120", "--slurm-parallel", "8"])
    assert result.exit_code == 0, result.output
    assert "submitted 2 cells as a job array: 4242" in result.output
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("--array=0-1%2", "--ntasks-per-node=2", "--gpus-per-node=2",
                 "--partition=gpu", "--time=120", "--signal=USR2@90", "--job-name=srv-tiny"):
        assert line in script, line  # USR2 before the time limit: checkpoint and requeue
    # a failed rank ends the cell's other tasks, whatever the cluster's KillOnBadExit
    (srun,) = [x for x in script.splitlines() if x.startswith("srun ")]
    assert "--kill-on-bad-exit=1" in srun.split()
    assert str(runs.resolve() / ab.SUBMITIT_DIR / "tiny") in script
    # nothing ran here: the cells wait for the cluster
    assert not list(runs.glob("*/status.json"))


def test_the_cell_check_lists_a_data_folder_once(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cell of a grid on one image folder is checked, the folder's layout only once
    (listing ImageNet's 2,000 class folders per cell is minutes on a network disk)."""
    from reproduce.data import datasets as data
    from reproduce.data.jpeg_folder import JpegFolderSpec, write_jpeg_folder

    folder = write_jpeg_folder(tmp_path / "data", JpegFolderSpec(
        classes=2, train_per_class=8, val_per_class=2, sizes=((24, 24),)))
    calls = []
    real = data.check_imagefolder
    monkeypatch.setattr(data, "check_imagefolder", lambda root: calls.append(root) or real(root))
    grid = load_grid(tiny_grid(tmp_path, dataset="imagefolder", data_path=str(folder),
                               batch_size=4), seeds=[0, 1])
    states = ab.plan(grid, tmp_path / "runs")
    assert len(states) == 4 and ab.check_cells(states) == []
    assert calls == [folder]


def test_jobs_train_cells_at_once_in_child_processes(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """--jobs 2: both cells run at the same time, each an srv train child with CPUs / 2 threads
    (the child logs to runs/.logs/), and they land in the cells' own run directories."""
    import time

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spans: dict[str, tuple[float, float]] = {}
    threads: dict[str, str] = {}
    real_run_child = ab.run_child

    def timed(state: ab.CellState, runs_root: Path, cmd: list[str],
              env: dict[str, str] | None = None) -> ab.Outcome:
        # the child process's whole life, as the parent sees it (not the child's own clock)
        start = time.monotonic()
        out = real_run_child(state, runs_root, cmd, env)
        spans[state.cfg.run_name] = (start, time.monotonic())
        threads[state.cfg.run_name] = (env or {}).get("OMP_NUM_THREADS", "")
        return out

    monkeypatch.setattr(local, "run_child", timed)
    grid = tiny_grid(tmp_path, epochs=1, warmup_epochs=0.0)
    runs = tmp_path / "runs"
    result = runner.invoke(app, ["ablate", str(grid), "--runs-dir", str(runs), "--no-table",
                                 "--jobs", "2"])
    assert result.exit_code == 0, result.output
    states = ab.plan(load_grid(grid), runs)
    assert [s.status for s in states] == ["done", "done"]
    for st in states:
        assert (st.run_dir / "result.json").exists()
        log = (runs / ab.LOG_DIR / f"{st.cfg.run_name}.log").read_text()
        assert f"-m reproduce train {st.cell.model} --recipe mini" in log
    assert len(spans) == 2
    # each child lives for seconds (import, build, train); both were launched before either ended
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values())
    assert set(threads.values()) == {str(ab.RunOptions(jobs=2).threads())}
    assert ab.RunOptions(jobs=2).threads() == max(1, len(os.sched_getaffinity(0)) // 2)


def test_a_killed_unreaped_process_is_not_alive() -> None:
    """A SIGKILLed rank whose parent died with it stays a zombie where the container's init does
    not reap orphans; its pid still answers signals, yet it runs nothing: not alive, so the rerun
    resumes its cell instead of reporting it running."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(child.pid, 0)  # the zombie answers signals ...
    assert ab.process_alive(child.pid, socket.gethostname()) is False  # ... and is not alive
    child.wait()
    assert ab.process_alive(os.getpid(), socket.gethostname()) is True

"""``srv runs`` over a runs folder holding finished, diverged, failed and running runs (their
files written here as the engine writes them)."""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.experiments.overview import collect_runs, write_grid_index

runner = CliRunner()
STAMP = "%Y-%m-%dT%H:%M:%S%z"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _run(root: Path, name: str, status: str, epoch: int, epochs: int = 10,
         top1: float | None = None, reason: str | None = None, pid: int | None = None,
         updated_ago: float = 0.0, started_ago: float = 0.0) -> None:
    run = root / name
    run.mkdir(parents=True)
    now = time.time()
    (run / "config.json").write_text(json.dumps({"model": name.rsplit("-", 1)[0],
                                                 "recipe": "mini", "epochs": epochs}))
    (run / "env.json").write_text(json.dumps({"started": time.strftime(
        STAMP, time.localtime(now - started_ago)), "resumed_from_epoch": 0}))
    (run / "status.json").write_text(json.dumps({
        "status": status, "epoch": epoch, "step": 4 * epoch, "reason": reason,
        "pid": pid or os.getpid(), "host": socket.gethostname(),
        "updated": time.strftime(STAMP, time.localtime(now - updated_ago))}))
    rows = [{"epoch": e, "step": 4 * e, "val_top1": 10.0 * e, "time_s": 30.0}
            for e in range(1, epoch + 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if top1 is not None:
        (run / "result.json").write_text(json.dumps({"top1": top1, "epochs": epochs}))


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    _run(root, "vit-mini-conv-aaa", "completed", 2, epochs=2, top1=81.5)
    _run(root, "vit-mini-patch-bbb", "diverged", 1, reason="non-finite loss at epoch 2")
    _run(root, "vit-mini-patch-ccc", "failed", 3, reason="RuntimeError: boom")
    _run(root, "vit-mini-conv-ddd", "running", 2, updated_ago=20, started_ago=100)
    _run(root, "vit-mini-conv-eee", "running", 1, pid=_dead_pid())
    (root / "mlruns" / "0").mkdir(parents=True)  # a tracker's store: not a run
    (root / "vit-mini-conv-aaa.old-20250101-000000").mkdir()  # moved aside by --restart
    write_grid_index(root, "stem", "mini", {"vit-mini-conv-aaa": "stem=conv seed=0",
                                            "vit-mini-patch-bbb": "stem=patch seed=0"})
    return root


def test_each_run_has_the_right_status(runs_root: Path) -> None:
    rows = {r.run: r for r in collect_runs(runs_root)}
    assert {name: r.status for name, r in rows.items()} == {
        "vit-mini-conv-aaa": "completed", "vit-mini-patch-bbb": "diverged",
        "vit-mini-patch-ccc": "failed", "vit-mini-conv-ddd": "running",
        "vit-mini-conv-eee": "failed"}  # its process is gone
    assert "stopped" in rows["vit-mini-conv-eee"].reason
    done = rows["vit-mini-conv-aaa"]
    assert (done.top1, done.epoch, done.epochs, done.train_time_s) == (81.5, 2, 2, 60.0)
    assert (done.grid, done.cell) == ("stem/mini", "stem=conv seed=0")
    running = rows["vit-mini-conv-ddd"]
    assert running.top1 == 20.0  # the last epoch's
    # 2 epochs in the 80 s from start to the last status: 40 s each, 8 left, 20 s spent
    assert running.eta_s == pytest.approx(40 * 8 - 20, abs=2)
    assert all(r.eta_s is None for r in rows.values() if r.status != "running")


def test_filters_by_grid_and_status(runs_root: Path) -> None:
    assert [r.run for r in collect_runs(runs_root, grid="stem")] == [
        "vit-mini-conv-aaa", "vit-mini-patch-bbb"]
    assert [r.run for r in collect_runs(runs_root, grid="stem/mini", status="diverged")] == [
        "vit-mini-patch-bbb"]
    assert sorted(r.run for r in collect_runs(runs_root, status="failed")) == [
        "vit-mini-conv-eee", "vit-mini-patch-ccc"]


def test_formats(runs_root: Path) -> None:
    out = runner.invoke(app, ["runs", "--runs-dir", str(runs_root), "--format", "json"])
    assert out.exit_code == 0, out.output
    data = {r["run"]: r for r in json.loads(out.stdout)}
    assert data["vit-mini-conv-aaa"]["top1"] == 81.5 and len(data) == 5
    out = runner.invoke(app, ["runs", "--runs-dir", str(runs_root), "--format", "csv",
                              "--status", "diverged"])
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [(r["run"], r["status"], r["epochs"], r["reason"]) for r in rows] == [
        ("vit-mini-patch-bbb", "diverged", "1/10", "non-finite loss at epoch 2")]
    out = runner.invoke(app, ["runs", "--runs-dir", str(runs_root), "--format", "md"])
    lines = out.stdout.splitlines()
    assert lines[0].startswith("| run ") and len(lines) == 2 + 5
    assert any("| completed " in line and "| 81.50 " in line for line in lines)
    out = runner.invoke(app, ["runs", "--runs-dir", str(runs_root)])  # not a terminal: plain
    assert out.stdout.splitlines()[-1] == "5 runs: 1 completed, 1 diverged, 2 failed, 1 running"


@pytest.mark.parametrize("make", [False, True])
def test_empty_or_missing_folder_is_one_line(tmp_path: Path, make: bool) -> None:
    root = tmp_path / "runs"
    if make:
        (root / ".locks").mkdir(parents=True)
    out = runner.invoke(app, ["runs", "--runs-dir", str(root)])
    assert out.exit_code == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert out.stderr.startswith(f"srv: error: no runs {'in' if make else 'folder at'} {root}")


def test_bad_filters_are_refused(runs_root: Path) -> None:
    out = runner.invoke(app, ["runs", "--runs-dir", str(runs_root), "--status", "done"])
    assert out.exit_code == 2 and "use one of running, completed" in out.stderr
    out = runner.invoke(app, ["runs", "--runs-dir", str(runs_root), "--grid", "lr"])
    assert out.exit_code == 2 and "grids there: stem/mini" in out.stderr

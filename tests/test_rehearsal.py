"""A full-scale rehearsal on CPU: the ImageNet path as a cluster user runs it, scaled down.

An ImageNet-layout folder of 2,100 real JPEGs of varied sizes (10 classes), written here,
trained through ``srv ablate`` with the *unchanged* DeiT recipe logic (RandAugment m9, random
erasing, Mixup/CutMix, repeated augmentation x3 under 2-process gloo DDP, EMA, loader workers, bf16
autocast, per-epoch schedule); only the model (vit-mini-conv), the image size (16), the batch and
the epochs are scaled down. One uninterrupted run is the reference. A second run is killed with
SIGKILL in the middle of an epoch, its data folder moved (as when copying ImageNet to node-local
disk), and resumed: it must end bit for bit where the reference did. Then ``srv eval`` and the
table. The folder holds a truncated JPEG and a non-image, as real folders do.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reproduce.data.jpeg_folder import JpegFolderSpec, write_jpeg_folder
from reproduce.experiments import process_alive

pytestmark = pytest.mark.slow

GRID = """
title = "Rehearsal: the DeiT recipe on JPEGs under DDP"
default_preset = "rehearsal"
[table]
rows = ["stem"]
columns = []
[axes.stem]
key = "model"
format = "vit-mini-{value}"
values = ["conv"]
[presets.rehearsal]
recipe = "deit"
scale = "rehearsal: 10-class JPEG folder (2,100 images) at 16x16, 2 gloo ranks"
seeds = [0]
[presets.rehearsal.set]
img_size = 16
batch_size = 128
epochs = 2
warmup_epochs = 1.0
num_workers = 2
amp = "bf16"
data_path = "DATA"
"""

#: metrics that depend on the machine's speed, not on what was computed
TIMING = {"img_per_s", "data_wait_frac", "time_s"}


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rehearsal")
    sizes = ((40, 30), (30, 40), (48, 36), (36, 48), (64, 48), (32, 32), (56, 42), (24, 32))
    data = write_jpeg_folder(root / "imagenet", JpegFolderSpec(
        classes=10, train_per_class=200, val_per_class=10, sizes=sizes, noise=20, seed=3))
    # real folders hold bad files: a JPEG cut short by a failed copy, an HTML page saved as .JPEG
    cut = data / "train" / "n00000003" / "train_3_00007.JPEG"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    (data / "val" / "n00000005" / "val_5_00002.JPEG").write_text("<html>404</html>")
    grid = root / "rehearsal.toml"
    grid.write_text(GRID.replace("DATA", str(data)))
    return {"root": root, "data": data, "grid": grid}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent) + os.pathsep + env.get(
        "PYTHONPATH", "")
    return env


def _ablate(grid: Path, runs: Path, tables: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "reproduce", "ablate", str(grid), "--backend", "torchrun",
            "--nproc", "2", "--runs-dir", str(runs), "--tables-dir", str(tables), *extra]


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc): torchrun starts each rank in a session of
    its own, so killing the launcher's process group would leave the ranks running."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant at once, as a node failure would, and wait (up to
    60 s) until none of them runs any more: a killed process's teardown takes a moment on a
    loaded machine, and a rerun started before it ends finds the run still held."""
    tree = _process_tree(pid)
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 60
    while any(process_alive(p, socket.gethostname()) for p in tree):
        assert time.monotonic() < deadline, "killed processes still run after 60 s"
        time.sleep(0.1)


def _rows(run: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(rehearsal: dict[str, Path]) -> Path:
    root = rehearsal["root"]
    done = subprocess.run(_ablate(rehearsal["grid"], root / "ref", root / "tables-ref"),
                          env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = [p for p in (root / "ref").iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run


def test_reference_run_is_the_deit_recipe_under_ddp(reference: Path) -> None:
    config = json.loads((reference / "config.json").read_text())
    assert config["recipe"] == "deit" and config["aa"] == "rand-m9-mstd0.5-inc1"
    assert config["reprob"] == 0.25 and config["mixup"] == 0.8 and config["cutmix"] == 1.0
    assert config["aug_repeats"] == 3 and config["amp"] == "bf16"
    assert config["derived"]["world_size"] == 2
    assert config["data"]["train_images"] == 2000 and config["data"]["num_classes"] == 10
    rows = _rows(reference)
    # repeated augmentation: 2000 // 256 * 256 / 2 = 896 samples per rank, 14 steps of 64
    assert [r["step"] for r in rows] == [14, 28]
    assert all(r["n_val"] == 99 for r in rows)  # the unreadable val image is not counted
    assert all(r["bad_images"] in (1, 2) for r in rows)  # the val file; the train one if drawn
    assert all(r["skipped_steps"] == 0 for r in rows)
    assert all("ema_top1" in r for r in rows)
    result = json.loads((reference / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 28
    assert any(f.endswith("val_5_00002.JPEG") for f in result["bad_files"])
    log = "".join(p.read_text() for p in reference.parent.rglob("*.log"))
    assert log.count("unreadable image") == len(result["bad_files"])  # one warning per file


def test_sigkill_mid_epoch_with_workers_and_moved_data_resumes_bit_for_bit(
        rehearsal: dict[str, Path], reference: Path) -> None:
    root = rehearsal["root"]
    runs, tables = root / "killed", root / "tables-killed"
    proc = subprocess.Popen(_ablate(rehearsal["grid"], runs, tables), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(runs.glob("*/last.pt")) and time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.1)
    # into epoch 2, timed by the machine's own speed (a fixed sleep outlived the whole epoch on
    # a fast CI machine): a third of epoch 1's training time, while epoch 2's steps are running
    (run_dir,) = [p.parent for p in runs.glob("*/last.pt")]
    epoch_s = _rows(run_dir)[0]["time_s"]
    time.sleep(max(0.2, epoch_s / 3))
    _kill_tree(proc.pid)  # srv ablate, torchrun, both ranks and their loader workers
    proc.wait()
    time.sleep(0.5)
    (run,) = [p for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert run.name == reference.name  # same config, same identity
    assert not (run / "result.json").exists(), "killed too late: the run had finished"
    assert json.loads((run / "status.json").read_text())["status"] == "running"

    # the data moves (node-local copy): the run keeps its identity and resumes
    moved = root / "local-disk" / "imagenet"
    moved.parent.mkdir()
    shutil.move(str(rehearsal["data"]), moved)
    again = subprocess.run(_ablate(rehearsal["grid"], runs, tables, "--set",
                                   f"data_path={moved}"),
                           env=_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    log = "".join(p.read_text() for p in runs.rglob("*.log"))
    assert "resuming" in again.stdout + log
    want, got = _rows(reference), _rows(run)
    assert len(got) == len(want) == 2
    for a, b in zip(want, got, strict=True):
        for key in set(a) - TIMING:
            assert a[key] == b[key], (key, a[key], b[key])
    ref_result = json.loads((reference / "result.json").read_text())
    result = json.loads((run / "result.json").read_text())
    for key in ("top1", "top5", "ema_top1", "best_top1", "steps", "loss_spikes",
                "grad_norm_max", "max_update_ratio", "config_hash"):
        assert result[key] == ref_result[key], key

    # srv eval agrees with training, from the moved data
    ev = subprocess.run([sys.executable, "-m", "reproduce", "eval", str(run), "--format",
                         "json", "--data", str(moved)], env=_env(), capture_output=True,
                        text=True, timeout=300)
    assert ev.returncode == 0, ev.stderr
    record = json.loads(ev.stdout)
    assert record["top1"] == result["top1"] and record["n_images"] == 99

    # and the grid's table was written where we asked
    table = (tables / "rehearsal.md").read_text()
    assert f"{result['top1']:.1f}" in table and "vit-mini" not in table.splitlines()[0]

"""2-process gloo runs where one rank is in trouble: every rank must end within seconds with
the right status (not wait for the collective timeout)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from conftest import TINY

LIMIT_S = 90  # start-up of two processes on a shared 2-core machine included


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fault: str, root: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    import torch

    torch.set_num_threads(1)
    from reproduce.training.config import resolve_config
    from reproduce.training.engine import train
    from reproduce.training.loop import TrainStep

    extra = {"epochs": 1, "warmup_epochs": 0.5, "sync_every": 2}
    if fault == "empty-val":
        extra["val_subset"] = 1  # rank 1's val shard is empty
    if rank == 1 and fault in ("nan-loss", "raises"):
        real, calls = TrainStep.forward_loss, [0]

        def faulty(self: TrainStep, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            calls[0] += 1
            loss = real(self, x, y)
            if calls[0] == 2 and fault == "raises":
                raise ValueError("injected fault")
            if calls[0] == 2:  # a non-finite loss whose gradients stay finite
                return loss + torch.tensor(float("nan"))
            return loss

        TrainStep.forward_loss = faulty  # type: ignore[method-assign]
    t0 = time.monotonic()
    try:
        out = train(resolve_config("vit-mini-conv", "mini", {**TINY, **extra}), root,
                    progress=False)
        record = {"status": out.status, "reason": out.reason, "result": out.result}
    except BaseException as err:  # noqa: BLE001 - the outcome of this rank is the point
        record = {"status": "raised", "reason": f"{type(err).__name__}: {err}"}
    record["seconds"] = time.monotonic() - t0
    Path(root, f"rank{rank}.json").write_text(json.dumps(record))


def _run(fault: str, root: Path) -> tuple[dict, dict, dict]:
    root.mkdir(parents=True)
    ctx = mp.start_processes(_worker, args=(2, _free_port(), fault, str(root)), nprocs=2,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + LIMIT_S
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{fault}: the ranks did not end within {LIMIT_S} s")
    a, b = (json.loads((root / f"rank{i}.json").read_text()) for i in range(2))
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    return a, b, json.loads((run / "status.json").read_text())


def test_a_rank_without_val_images_does_not_hang_evaluation(tmp_path: Path) -> None:
    a, b, status = _run("empty-val", tmp_path / "runs")
    assert a["status"] == b["status"] == "completed", (a, b)
    assert a["result"]["n_val"] == 1 and status["status"] == "completed"


def test_a_non_finite_loss_on_one_rank_diverges_every_rank(tmp_path: Path) -> None:
    a, b, status = _run("nan-loss", tmp_path / "runs")
    assert a["status"] == b["status"] == "diverged", (a, b)
    assert a["reason"] == b["reason"] and "non-finite loss" in a["reason"]
    assert status["status"] == "diverged" and status["step"] == 2


def test_an_exception_on_one_rank_fails_every_rank_promptly(tmp_path: Path) -> None:
    a, b, status = _run("raises", tmp_path / "runs")
    assert b["status"] == "raised" and "injected fault" in b["reason"]
    assert a["status"] == "raised", a  # rank 0's next collective errors out
    assert a["seconds"] < 60 and b["seconds"] < 60
    assert status["status"] == "failed"
    assert status["reason"] == "rank 1: ValueError: injected fault"


# --- timeouts: 10 minutes for a training collective, hours for the decode-check barrier ------

def _timeout_worker(rank: int, world: int, port: int, root: str) -> None:
    """Rank 0's decode check outlasts the (shortened) training timeout but not the long one;
    then rank 1 skips a collective: rank 0 must fail at the training timeout."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    import reproduce.data.images as images
    from reproduce.data.dali.files import unreadable_once_per_node
    from reproduce.utils import distributed

    distributed.TIMEOUT = timedelta(seconds=TRAIN_TIMEOUT_S)
    distributed.LONG_TIMEOUT = timedelta(seconds=60)

    def slow_check(root: str, paths: list[str], processes: int, say: object = None) -> list[int]:
        if rank == 0:
            time.sleep(CHECK_S)  # longer than the training timeout
        return [1]

    images.find_unreadable = slow_check  # type: ignore[assignment]
    Path(root, f"ready{rank}").touch()  # start together: the rendezvous has the short timeout
    while not all(Path(root, f"ready{r}").exists() for r in range(world)):
        time.sleep(0.05)
    info = distributed.init_distributed("cpu")
    record: dict = {"seconds": None}
    try:
        record["bad"] = unreadable_once_per_node(Path(root), ["a", "b"], 1, info)
        t0 = time.monotonic()
        if rank == 1:
            time.sleep(3 * TRAIN_TIMEOUT_S + 30)  # hung: never joins the all-reduce
        dist.all_reduce(torch.ones(1))
        record["status"] = "no timeout"
    except BaseException as err:  # noqa: BLE001 - the outcome of this rank is the point
        record["status"] = f"raised {type(err).__name__}: {str(err)[:200]}"
    if "bad" in record:
        record["seconds"] = time.monotonic() - t0
    Path(root, f"rank{rank}.json").write_text(json.dumps(record))


TRAIN_TIMEOUT_S = 4
CHECK_S = 7


def test_a_hung_rank_fails_the_others_at_the_training_timeout_not_the_decode_check(
        tmp_path: Path) -> None:
    ctx = mp.start_processes(_timeout_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2,
                             join=False, start_method="spawn")
    result = tmp_path / "rank0.json"
    deadline = time.monotonic() + LIMIT_S
    while not result.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    for p in ctx.processes:  # rank 1 is still hung
        p.kill()
    assert result.exists(), f"rank 0 did not end within {LIMIT_S} s (no training timeout)"
    record = json.loads(result.read_text())
    assert record["bad"] == [1]  # the long barrier outlasted the training timeout
    assert record["status"].startswith("raised"), record
    assert record["seconds"] < TRAIN_TIMEOUT_S + 20, record


def test_a_failed_rank_aborts_an_nccl_group_instead_of_destroying_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """destroy_process_group waits for queued NCCL kernels (a collective the others never join
    would keep the failed rank alive); abort does not."""
    import torch.distributed as dist

    from reproduce.utils import distributed

    calls: list[str] = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(dist, "destroy_process_group", lambda group=None: calls.append("destroy"))
    monkeypatch.setattr(dist.distributed_c10d, "_abort_process_group",
                        lambda group=None: calls.append("abort"))
    distributed.cleanup(failed=True)
    distributed.cleanup()
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "gloo")
    distributed.cleanup(failed=True)  # gloo: leaving the group makes the others' next call fail
    assert calls == ["abort", "destroy", "destroy"]


def test_the_decode_check_uses_the_cpus_of_this_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from reproduce.data.dali.dali_loaders import _check_processes
    from reproduce.recipes.recipe import Recipe

    monkeypatch.setattr(os, "cpu_count", lambda: 128)  # the node
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {4, 5, 6})  # --cpus-per-task 3
    assert _check_processes(Recipe(num_workers=10)) == 3

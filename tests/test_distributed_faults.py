"""2-process gloo runs where one rank is in trouble: every rank must end within seconds with
the right status (not wait for the 30-minute collective timeout)."""

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
    from reproduce.training.step import TrainStep

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

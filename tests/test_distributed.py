"""2-process CPU DDP (gloo, torchrun): training runs, and evaluation counts every image once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import TINY, tiny_args

from reproduce.training.config import resolve_config
from reproduce.training.engine import train


def _torchrun(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "reproduce"]


def test_ddp_eval_matches_one_process_on_an_odd_val_set(
    runs_root: Path, subprocess_env: dict[str, str]
) -> None:
    outcome = train(resolve_config("vit-mini-conv", "mini", {**TINY, "epochs": 1,
                                                             "warmup_epochs": 0.5}),
                    runs_root, progress=False)
    one = subprocess.run([sys.executable, "-m", "reproduce", "eval", str(outcome.run_dir),
                          "--format", "json"], env=subprocess_env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([*_torchrun(2), "eval", str(outcome.run_dir), "--format", "json"],
                         env=subprocess_env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)  # only rank 0 prints
    assert a["n_images"] == b["n_images"] == 101
    assert a["top1"] == b["top1"] == outcome.result["top1"]
    assert a["top5"] == b["top5"]


def test_ddp_training_completes_and_records_the_world_size(runs_root: Path,
                                            subprocess_env: dict[str, str]) -> None:
    args = ["train", "vit-mini-conv", "--runs-dir", str(runs_root), "--no-progress",
            *tiny_args(epochs=1, warmup_epochs=0.5, sync_bn=True)]
    done = subprocess.run([*_torchrun(2), *args], env=subprocess_env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sync_bn needs CUDA" in done.stdout
    (run,) = runs_root.iterdir()
    config = json.loads((run / "config.json").read_text())
    assert config["derived"]["world_size"] == 2
    assert config["derived"]["per_device_batch"] == TINY["batch_size"] // 2
    result = json.loads((run / "result.json").read_text())
    assert result["n_val"] == 101 and result["world_size"] == 2
    assert json.loads((run / "env.json").read_text())["world_size"] == 2


def test_a_process_that_sees_one_gpu_trains_on_it(monkeypatch) -> None:  # noqa: ANN001
    """SLURM's one GPU per task (--gpus-per-task, gpu-bind) leaves each process one device,
    cuda:0, whatever its local rank; with several visible, the local rank picks (torchrun)."""
    import pytest
    import torch

    from reproduce.errors import SrvError
    from reproduce.utils import distributed

    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    info = distributed.init_distributed("auto")
    assert info.device == torch.device("cuda", 0) and chosen == [0] and info.local_rank == 3
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert distributed.init_distributed("cuda").device == torch.device("cuda", 3)
    assert chosen == [0, 3]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(SrvError, match=r"local rank 3 but this process sees 2 GPUs "
                                       r"\(CUDA_VISIBLE_DEVICES=0,1\)"):
        distributed.init_distributed("auto")
    assert distributed.init_distributed("cpu").device == torch.device("cpu")


def test_ddp_is_given_the_device_of_a_task_that_sees_one_gpu(monkeypatch, tmp_path) -> None:  # noqa: ANN001
    """Local rank 3 of a SLURM task that sees one GPU trains on cuda:0: DDP must be told 0 (told
    the local rank, it refuses to start). A fake torch.cuda (one device) and a recording DDP."""
    import torch
    from torch import nn

    from reproduce.training import engine as trainer_mod
    from reproduce.training.runs import RunDir
    from reproduce.utils import distributed
    from reproduce.utils.reporter import Reporter

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "3")
    info = distributed.init_distributed("cuda")
    info = distributed.DistInfo(3, 4, info.local_rank, info.device)  # rank 3 of 4, no group

    seen: list[dict] = []

    class RecordingDDP(nn.Module):
        def __init__(self, module: nn.Module, **kwargs: object) -> None:
            super().__init__()
            self.module = module
            seen.append(kwargs)

    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", RecordingDDP)
    monkeypatch.setattr(nn.Module, "to", lambda self, *a, **k: self)  # no GPU to move to
    monkeypatch.setattr(trainer_mod, "configure_device", lambda *a, **k: None)
    cfg = resolve_config("vit-mini-conv", "mini", {**TINY, "batch_size": 64, "device": "cuda"})
    trainer_mod.Trainer(cfg, RunDir(tmp_path / "run"), info, Reporter(enabled=False))
    assert info.device == torch.device("cuda", 0) and info.local_rank == 3
    assert seen and seen[0]["device_ids"] == [0]

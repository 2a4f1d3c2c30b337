"""Stability signals under fp16 and DDP: skipped steps, scale collapse, global losses."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import TINY

from reproduce.errors import ExitCode
from reproduce.training.config import resolve_config
from reproduce.training.engine import train
from reproduce.training.loop import EpochStats, StepOutput, StepRecord, StepWindow
from reproduce.utils.distributed import DistInfo


def strict_json(text: str) -> object:
    """Parse JSON as the standard defines it: no NaN / Infinity literals."""
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _fp16(**extra: object):
    # a huge initial loss scale makes the first fp16 steps overflow, as on a GPU at start-up
    return resolve_config("vit-mini-conv", "mini", {**TINY, "amp": "fp16",
                                                    "amp_init_scale": 2.0**20, **extra})


def test_fp16_skipped_steps_are_counted_and_keep_every_file_valid_json(
        runs_root: Path) -> None:
    outcome = train(_fp16(), runs_root, progress=False)
    assert outcome.status == "completed"
    rows = [strict_json(line) for line in
            (outcome.run_dir / "metrics.jsonl").read_text().splitlines()]
    skipped = [row["skipped_steps"] for row in rows]  # type: ignore[index]
    assert skipped[0] >= 1, "the oversized initial scale must overflow at least once"
    assert sum(skipped) < 8, "the scaler recovers: later steps update the weights"
    for row in rows:
        assert row["step"] in (4, 8)  # type: ignore[index]
        # statistics come from the steps that updated the weights only: finite or null
        for key in ("grad_norm_mean", "grad_norm_max", "train_loss", "max_update_ratio"):
            value = row[key]  # type: ignore[index]
            assert value is None or (isinstance(value, float) and value == value
                                     and abs(value) != float("inf")), (key, value)
        assert row["loss_scale"] < 2.0**20  # type: ignore[index]
    assert rows[-1]["grad_norm_max"] is not None  # type: ignore[index]
    result = strict_json((outcome.run_dir / "result.json").read_text())
    assert result["skipped_steps"] == sum(skipped)  # type: ignore[index]
    ckpt = torch.load(outcome.run_dir / "last.pt", weights_only=True)
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())


def test_fp16_scale_collapse_is_a_divergence(runs_root: Path) -> None:
    # the same overflows, but any loss scale below 2^18 counts as collapsed
    outcome = train(_fp16(amp_min_scale=2.0**18), runs_root, progress=False)
    assert outcome.status == "diverged" and outcome.exit_code == ExitCode.DIVERGED
    status = json.loads((outcome.run_dir / "status.json").read_text())
    assert "loss scale collapsed" in status["reason"] and status["epoch"] == 1
    assert not (outcome.run_dir / "result.json").exists()


def test_epoch_stats_leave_skipped_steps_out() -> None:
    stats = EpochStats()
    mean = None
    for rec in [StepRecord(1, 2.0, 1.0, False, 0.01), StepRecord(2, float("inf"),
                float("nan"), True, None), StepRecord(3, 5.0, 3.0, False, 0.02)]:
        mean = stats.add(rec, mean, spike_factor=2.0)
    assert stats.skipped_steps == 1 and stats.skipped_at == [2] and stats.steps == 2
    assert stats.grad_norm_mean == 2.0 and stats.grad_norm_max == 3.0
    assert stats.train_loss == 3.5 and stats.max_update_ratio == 0.02
    assert stats.spikes == 1  # 5.0 > 2 x the running mean 2.0; the inf step is not a spike
    assert mean == pytest.approx(0.9 * 2.0 + 0.1 * 5.0)


def _window_worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        window = StepWindow(4, torch.device("cpu"))
        for step in range(1, 4):
            local_loss = torch.tensor(float(step * (rank + 1)))  # rank 0: 1,2,3; rank 1: 2,4,6
            rec = StepOutput(local_loss, torch.tensor(1.0), torch.tensor(False), None)
            window.record(step, rec)
        records = window.flush(DistInfo(rank, world, rank, torch.device("cpu")))
        Path(f"{out}.{rank}").write_text(json.dumps([r.loss for r in records]))
    finally:
        dist.destroy_process_group()


def test_step_losses_are_global_over_ranks(tmp_path: Path) -> None:
    """Spikes and the train loss see the mean loss over ranks, identical on every rank."""
    out = str(tmp_path / "losses")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_window_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    a = json.loads(Path(f"{out}.0").read_text())
    b = json.loads(Path(f"{out}.1").read_text())
    assert a == b == [1.5, 3.0, 4.5]


@pytest.mark.parametrize("fused", [True, False])
def test_a_skipped_step_leaves_weights_and_optimizer_state_alone(fused: bool) -> None:
    """The fused path (CUDA's, runnable on the CPU too) and the host path skip alike."""
    from reproduce.training.loop import step_unless_skipped

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=fused)
    model(torch.randn(8, 4)).sum().backward()
    step_unless_skipped(opt, torch.tensor(False), None, fused)
    before = [p.detach().clone() for p in model.parameters()]
    state = {k: v.clone() for k, v in opt.state[model.weight].items()}
    model(torch.randn(8, 4)).sum().backward()
    step_unless_skipped(opt, torch.tensor(True), None, fused)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    for key, value in opt.state[model.weight].items():
        assert torch.equal(value, state[key]), key  # moments and the step count unchanged
    step_unless_skipped(opt, torch.tensor(False), None, fused)
    assert not torch.equal(before[0], model.weight.detach())

"""The lr schedule's stepping rules and the EMA's update rules, on their own and inside real
(tiny) training runs: what the metrics row logs is the lr the epoch's first update used."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import TINY
from torch import nn

from reproduce.recipes.recipe import Recipe
from reproduce.training.config import resolve_config
from reproduce.training.ema import build_ema, ema_rule
from reproduce.training.engine import train
from reproduce.training.schedule import LrSchedule, glance_epochs


def _schedule(spe: int = 10, **keys: object) -> LrSchedule:
    r = Recipe(**{"epochs": 10, "warmup_epochs": 2.0, "warmup_lr": 1e-4, "min_lr": 1e-5,
                  **keys})
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))], lr=1e-2)
    opt.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": 1e-2})
    return LrSchedule(opt, r, spe)


def _cosine(t: float, total: float, peak: float = 1e-2, floor: float = 1e-5) -> float:
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * t / total))


def test_three_ways_to_step_the_same_curve() -> None:
    per_update = _schedule(sched_step="update")
    per_epoch = _schedule(sched_step="epoch")
    after = _schedule(sched_step="epoch-after")
    # per update: warmup over 20 updates, then timm's cosine over 100 (warmup inside it)
    assert per_update.lr_at(1, 0) == pytest.approx(1e-4)
    assert per_update.lr_at(1, 5) == pytest.approx(1e-4 + 5 * (1e-2 - 1e-4) / 20)
    assert per_update.lr_at(4, 3) == pytest.approx(_cosine(33, 100))
    # per epoch (pycls, timm train.py): epoch e at sched(e - 1), constant within the epoch
    assert [per_epoch.lr_at(e) for e in (1, 2, 3)] == pytest.approx(
        [1e-4, 1e-4 + (1e-2 - 1e-4) / 2, _cosine(2, 10)])  # warmup inside the cosine
    assert per_epoch.lr_at(4, 7) == per_epoch.lr_at(4) == pytest.approx(_cosine(3, 10))
    # DeiT: one more epoch late, so the first two epochs both sit at warmup_lr
    assert after.lr_at(1) == after.lr_at(2) == pytest.approx(1e-4)
    assert [after.lr_at(e) for e in range(2, 11)] == pytest.approx(
        [per_epoch.lr_at(e) for e in range(1, 10)])


def test_the_loop_calls_set_every_param_group() -> None:
    s = _schedule(sched_step="update")
    s.begin_epoch(3)
    assert [g["lr"] for g in s.optimizer.param_groups] == [s.lr_at(3)] * 2
    s.after_update(25)  # 25 updates done: the next is update 5 of epoch 3
    assert [g["lr"] for g in s.optimizer.param_groups] == [s.lr_at(3, 5)] * 2
    per_epoch = _schedule(sched_step="epoch")
    per_epoch.begin_epoch(4)
    per_epoch.after_update(35)  # per-epoch stepping ignores updates
    assert per_epoch.optimizer.param_groups[0]["lr"] == pytest.approx(per_epoch.lr_at(4))
    restored = _schedule(sched_step="update")
    restored.load_state_dict(s.state_dict())
    assert restored.lr_at(7, 2) == s.lr_at(7, 2)


def test_pycls_warmup_and_floor_are_relative_to_the_lr() -> None:
    keys = dict(sched_step="epoch", warmup_lr=0.0, warmup_factor=0.1, min_lr=0.0,
                min_lr_factor=0.005)
    for peak in (1e-3, 8e-3):
        s = _schedule(**keys)
        for g in s.optimizer.param_groups:
            g["lr"] = g["initial_lr"] = peak
        s = LrSchedule(s.optimizer, s.r, 10)
        assert s.lr_at(1) == pytest.approx(0.1 * peak)  # 0.1 x lr, whatever the lr
        # the warmup multiplies the cosine (pycls optimizer.py:113-118)
        cos = (1 - 0.005) * 0.5 * (1 + math.cos(math.pi / 10)) + 0.005
        assert s.lr_at(2) == pytest.approx(peak * cos * (0.1 * 0.5 + 0.5))
        assert s.lr_at(10) == pytest.approx(peak * ((1 - 0.005) * 0.5 * (
            1 + math.cos(math.pi * 9 / 10)) + 0.005))


def test_glance_epochs_cover_warmup_middle_and_end() -> None:
    assert [e for e, _ in glance_epochs(Recipe(epochs=300, warmup_epochs=5))] == [
        1, 2, 5, 6, 7, 151, 300]
    assert [e for e, _ in glance_epochs(Recipe(epochs=3, warmup_epochs=0))] == [1, 2, 3]


def test_ema_rules_of_deit_and_pycls() -> None:
    deit = ema_rule(Recipe(ema_decay=0.99996), steps_per_epoch=1251)
    assert deit is not None and deit.effective_decay() == 0.99996
    assert [deit.action(s) for s in (1, 2, 1252)] == ["update"] * 3
    pycls = ema_rule(Recipe(ema_alpha=1e-5, ema_update_period=32, ema_warmup_copy=True,
                            warmup_epochs=5, batch_size=2048, epochs=400), steps_per_epoch=625)
    assert pycls is not None and 1 - pycls.decay == pytest.approx(1e-5 * 2048 / 400 * 32)
    assert pycls.effective_decay() == pytest.approx(pycls.decay ** (1 / 32))
    # iterations 0, 32, ... of each epoch (counted from the epoch's start, as pycls does)
    assert [pycls.action(s) for s in (1, 2, 33, 626, 627)] == [
        "copy", "skip", "copy", "copy", "skip"]
    assert pycls.action(5 * 625 + 1) == "update" and pycls.action(5 * 625 + 33) == "update"
    assert ema_rule(Recipe(), 10) is None


def test_the_ema_blends_and_copies_the_state() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    ema = build_ema(model, Recipe(ema_decay=0.75), steps_per_epoch=10)
    assert ema is not None
    before = ema.module[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.fill_(4.0)
    assert ema.update(model, 1) == "update"
    assert torch.allclose(ema.module[0].weight, before + 0.25)
    assert torch.allclose(ema.module[1].running_mean, torch.full((2,), 1.0))  # buffers too


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_loop_logs_the_lr_each_epoch_ran_at(runs_root: Path) -> None:
    """DeiT's stepping in a real run: epochs 1 and 2 at warmup_lr, epoch 3 past the warmup."""
    cfg = resolve_config("vit-mini-patch", "mini", {**TINY, "epochs": 3, "warmup_epochs": 1.0,
                                                     "sched_step": "epoch-after"})
    outcome = train(cfg, runs_root, progress=False)
    assert outcome.status == "completed"
    rows = _rows(outcome.run_dir)
    peak = 1e-3 * 64 / 128
    assert [r["lr"] for r in rows] == pytest.approx(
        [1e-6, 1e-6, 1e-5 + 0.5 * (peak - 1e-5) * (1 + math.cos(math.pi / 3))])
    assert all(r["lr_end"] == r["lr"] for r in rows)  # stepped per epoch only


def test_the_loop_runs_the_pycls_ema(runs_root: Path) -> None:
    """An EMA that copies the weights through its warmup equals the weights after it."""
    cfg = resolve_config("vit-mini-conv", "mini", {**TINY, "epochs": 1, "warmup_epochs": 1.0,
                                                    "ema_alpha": 1e-3, "ema_warmup_copy": True})
    outcome = train(cfg, runs_root, progress=False)
    ckpt = torch.load(outcome.run_dir / "last.pt", weights_only=True)
    for key, value in ckpt["model"].items():
        assert torch.equal(ckpt["ema"][key], value), key

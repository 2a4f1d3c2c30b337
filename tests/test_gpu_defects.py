"""GPU-only defects, checked on the CPU where torch's semantics can be reproduced: RNG states a
loader mapped elsewhere, CUDA RNG states of more devices than are visible, fused SGD under
fp16 skips, SAM's second pass, bf16 without GPU support, the epoch clock, dynamo's limit."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, tiny_args
from torch import nn
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.errors import SrvError
from reproduce.training.builders import build_optimizer
from reproduce.training.config import resolve_config
from reproduce.training.device import check_amp, compile_model
from reproduce.training.engine import Trainer, train
from reproduce.training.loop import TrainStep, step_unless_skipped
from reproduce.training.resume import rng_state, set_rng_state
from reproduce.training.timing import EpochClock
from reproduce.utils.distributed import DistInfo


def _draws() -> tuple[float, float, float]:
    return torch.rand(1).item(), float(np.random.rand()), random.random()


def test_rng_states_mapped_to_another_dtype_still_restore() -> None:
    """torch.set_rng_state takes only CPU ByteTensors; a loader may hand them over otherwise."""
    state = rng_state()
    expected = _draws()
    mangled = {**state, "torch": state["torch"].to(torch.int64),
               "numpy": [state["numpy"][0], state["numpy"][1].double(), *state["numpy"][2:]]}
    _draws()
    set_rng_state(mangled)
    assert _draws() == expected


def test_a_resume_from_a_checkpoint_with_mapped_rng_states_ends_where_one_run_does(
        runs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = resolve_config("vit-mini-conv", "mini", {**TINY})
    whole = train(cfg, runs_root / "whole", progress=False)
    real_epoch = Trainer.train_epoch

    def stop_in_epoch_2(self: Trainer):  # a kill after epoch 1's checkpoint
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(self)

    monkeypatch.setattr(Trainer, "train_epoch", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, runs_root / "cut", progress=False)
    monkeypatch.setattr(Trainer, "train_epoch", real_epoch)
    last = runs_root / "cut" / cfg.run_name / "last.pt"
    ckpt = torch.load(last, weights_only=True)
    ckpt["rng"]["torch"] = ckpt["rng"]["torch"].to(torch.int32)  # not a ByteTensor any more
    torch.save(ckpt, last)
    resumed = train(cfg, runs_root / "cut", progress=False)
    assert resumed.status == "completed"
    assert resumed.result["top1"] == whole.result["top1"]
    assert resumed.result["grad_norm_max"] == whole.result["grad_norm_max"]


def test_a_checkpoint_with_more_cuda_rng_states_than_visible_devices_resumes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Saved on 4 GPUs, resumed where one is visible (states built on the CPU; torch.cuda's
    setters replaced by ones that behave as on a 1-GPU machine)."""
    restored: list[tuple[int, torch.Tensor]] = []

    def set_state(state: torch.Tensor, device: int | str = "cuda") -> None:
        index = 0 if device == "cuda" else int(device)
        if index >= 1:
            raise IndexError(f"invalid device ordinal {index}")
        assert state.dtype == torch.uint8 and state.device.type == "cpu"
        restored.append((index, state))

    def set_state_all(states: list[torch.Tensor]) -> None:
        for i, state in enumerate(states):
            set_state(state, i)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_state_all)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": torch.full(
        (16,), 7, dtype=torch.uint8))
    cpu_state = torch.get_rng_state()
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(4)]
    old_format = {"torch": cpu_state, "numpy": rng_state()["numpy"],
                  "python": random.getstate(), "cuda": states}
    set_rng_state(old_format)
    assert [(i, int(s[0])) for i, s in restored] == [(0, 0)]
    saved = rng_state()  # now only the current device's state is saved
    assert isinstance(saved["cuda"], torch.Tensor) and int(saved["cuda"][0]) == 7
    set_rng_state(saved)
    assert int(restored[-1][1][0]) == 7


def test_sgd_under_fp16_is_not_fused_and_a_skipped_step_leaves_momentum_alone() -> None:
    """torch's fused SGD allocates its momentum with empty_like on the first step even when
    GradScaler skips it; SGD must stay off the fused path under fp16."""
    r = resolve_config("vit-mini-patch", "mini", {**TINY, "opt": "sgd", "amp": "fp16",
                                                  "momentum": 0.9}).recipe
    torch.manual_seed(0)
    model, ref = nn.Linear(4, 3), nn.Linear(4, 3)
    ref.load_state_dict(model.state_dict())
    opt = build_optimizer(model, r, 0.1, fused=True)
    ref_opt = build_optimizer(ref, r, 0.1, fused=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    x = torch.randn(8, 4)
    scaler.scale(model(x).sum() * 1e37).backward()  # overflows once scaled
    scaler.unscale_(opt)
    step_unless_skipped(opt, torch.tensor(True), scaler, fused=False)
    assert scaler.get_scale() < 2.0**10  # the step was skipped and the scale backed off
    for p in model.parameters():
        assert opt.state[p].get("momentum_buffer") is None  # untouched: never created
    opt.zero_grad()
    scaler.scale(model(x).sum()).backward()
    scaler.unscale_(opt)
    step_unless_skipped(opt, torch.tensor(False), scaler, fused=False)
    ref(x).sum().backward()
    ref_opt.step()
    for a, b in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b)  # as if the skipped step never happened


def test_sam_second_pass_with_non_finite_gradients_is_skipped() -> None:
    """A finite first pass whose perturbed weights overflow: the step must not be taken."""
    r = resolve_config("vit-mini-patch", "mini", {**TINY, "opt": "sam", "sam_rho": 1e38,
                                                  "clip_grad": 0.0}).recipe
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = build_optimizer(model, r, 0.1)
    params = list(model.parameters())
    step = TrainStep(model, params, opt, nn.CrossEntropyLoss(), r, DistInfo())
    before = [p.detach().clone() for p in params]
    out = step(10 * torch.randn(8, 4), torch.randint(0, 3, (8,)))
    loss, norm, skipped = out.loss, out.grad_norm, out.skipped
    assert torch.isfinite(loss) and torch.isfinite(norm)  # the first pass was fine
    assert bool(skipped)
    assert all(torch.equal(a, b) for a, b in zip(before, params, strict=True))


def test_bf16_on_a_gpu_without_bf16_is_refused(monkeypatch: pytest.MonkeyPatch,
                                               runs_root: Path) -> None:
    # a V100 / T4 as torch sees it: bf16 "supported" through emulation, compute capability 7
    capability = [(7, 0)]
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability[0])
    with pytest.raises(SrvError, match=r"this one is 7\.0: use --set amp=fp16"):
        check_amp("bf16", torch.device("cuda"))
    check_amp("fp16", torch.device("cuda"))
    check_amp("bf16", torch.device("cpu"))
    capability[0] = (8, 0)  # an A100
    check_amp("bf16", torch.device("cuda", 0))
    capability[0] = (7, 5)
    # the whole command, on a machine that looks like a T4 to srv
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    result = CliRunner().invoke(app, ["train", "vit-mini-conv", "--runs-dir", str(runs_root),
                                      *tiny_args(amp="bf16", device="cuda")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("srv: error: amp=bf16 needs a GPU")
    assert "fp16" in lines[0]


class _FakeEvent:
    """A device event on a scripted clock (what a CUDA event reports, at chosen times)."""

    now = 0.0

    def record(self) -> None:
        self.t = _FakeEvent.now

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: _FakeEvent) -> float:
        return 1000.0 * (end.t - self.t)


def test_epoch_clock_counts_the_device_idle_gaps_as_data_wait() -> None:
    _FakeEvent.now = 0.0
    clock = EpochClock(torch.device("cpu"), event=_FakeEvent)
    for i in range(3):
        _FakeEvent.now += 2.0  # waiting for the batch
        clock.batch_ready()
        _FakeEvent.now += 3.0  # the step's device work
        clock.step_done()
        if i == 1:
            clock.settle()  # a flush of the step window
    assert clock.finish() == (15.0, 6.0)


def test_compile_model_resets_dynamo_so_many_models_compile(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    compiled: list[int] = []

    def backend(gm: torch.fx.GraphModule, inputs: list[torch.Tensor]):
        compiled.append(1)
        return gm.forward

    x = torch.randn(2, 4)
    for _ in range(3):  # three grid cells in one process
        net = compile_model(nn.Linear(4, 4), backend=backend)
        net(x)
    assert len(compiled) == 3


def test_deterministic_is_not_part_of_the_run_identity() -> None:
    plain = resolve_config("vit-mini-conv", "mini", {**TINY})
    det = resolve_config("vit-mini-conv", "mini", {**TINY, "deterministic": True})
    assert det.recipe.deterministic and plain.hash == det.hash
    assert json.dumps(det.to_dict())  # recorded in config.json


def test_deterministic_does_not_leak_into_the_next_run_of_the_process(runs_root: Path) -> None:
    """Grid cells run one after another in one process: a --deterministic cell must leave
    torch's process-wide flags as it found them."""
    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(), cudnn.benchmark,
              cudnn.deterministic)
    seen: list[bool] = []
    real = TrainStep.__call__

    def recording(self: TrainStep, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real(self, *args, **kwargs)

    TrainStep.__call__ = recording  # type: ignore[method-assign]
    try:
        out = train(resolve_config("vit-mini-conv", "mini",
                                   {**TINY, "epochs": 1, "train_subset": 64,
                                    "val_subset": 16, "deterministic": True}),
                    runs_root, progress=False)
        assert out.status == "completed" and seen and all(seen)  # on during the run
        after = (torch.are_deterministic_algorithms_enabled(), cudnn.benchmark,
                 cudnn.deterministic)
    finally:
        TrainStep.__call__ = real  # type: ignore[method-assign]
        torch.use_deterministic_algorithms(before[0])
        cudnn.benchmark, cudnn.deterministic = before[1:]
    assert after == before


def test_cublas_workspace_is_set_before_cuda_is_used_or_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it makes a handle: set once CUDA is in use it
    would do nothing (and silence torch's own check)."""
    import os

    from reproduce.training.device import cublas_workspace

    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # unset (and restored after the test)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    cublas_workspace(False)  # not asked for: nothing to refuse
    with pytest.raises(SrvError, match="export CUBLAS_WORKSPACE_CONFIG=:4096:8"):
        cublas_workspace(True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    cublas_workspace(True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    cublas_workspace(True)  # set in time: nothing to refuse


def test_a_non_finite_loss_reaches_every_gradient_and_a_finite_one_is_unchanged() -> None:
    """Under DDP the step's skip needs no collective of its own: a NaN loss whose gradients
    would stay finite (a NaN term without parameters) is carried into the gradients, which
    DDP's all-reduce spreads to every rank (tests/test_distributed_faults.py runs it)."""
    from reproduce.training.loop import carry_non_finite

    w = torch.ones(3, requires_grad=True)
    carry_non_finite((2 * w).sum() + torch.tensor(float("nan"))).backward()
    assert torch.isnan(w.grad).all()
    w.grad = None
    loss = (2 * w).sum()
    carried = carry_non_finite(loss)
    carried.backward()
    assert torch.equal(carried, loss) and torch.equal(w.grad, torch.full((3,), 2.0))

"""One optimizer step, as DeiT's ``engine.py`` ``train_one_epoch`` takes it: autocast, the loss
scaler, clipping, SAM, and a skip that never stalls the host.

* A step with a non-finite loss or gradient never reaches the weights: the flag is computed on
  the device and handed to the optimizer the way GradScaler hands it ``found_inf``. Every rank
  skips the same steps with no collective of its own: under DDP a non-finite loss is multiplied
  into its backward (:func:`carry_non_finite`), so DDP's gradient all-reduce carries it and the
  averaged gradient's norm is non-finite on every rank. The host reads the flag at the next
  flush of the step window (:mod:`reproduce.training.stability`).
* On CUDA the step's device work is timed with CUDA events (:class:`EpochClock`), so img/s and
  the data-wait fraction are the GPU's, not the host's view of an asynchronous queue.
* Gradient accumulation (``accum_steps``): the per-device batch is cut into micro-batches, each
  loss scaled by ``1/accum_steps``, DDP's all-reduce only on the last micro-batch; everything
  else acts per optimizer update (:class:`TrainStep`).
* Device set-up: cuDNN autotuning and TF32 by default (timm's ``train.py``), or deterministic
  kernels (``deterministic = true``), and the AMP refusals torch would otherwise pass over.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from reproduce.errors import SrvError
from reproduce.recipes.recipe import Recipe
from reproduce.training import sam
from reproduce.utils.distributed import DistInfo

__all__ = ["TrainStep", "EpochClock", "HostEvent", "autocast", "check_amp", "compile_model",
           "configure_device", "device_flags_kept", "cublas_workspace", "step_unless_skipped",
           "carry_non_finite"]

CUBLAS_WORKSPACE = ":4096:8"  # torch's "Reproducibility" notes: deterministic cuBLAS workspaces


def cublas_workspace(deterministic: bool) -> None:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` for a deterministic run, before the process's first
    cuBLAS handle: cuBLAS reads it when a handle is made, and torch keeps its handles for the
    process, so set later it has no effect (while it silences torch's own check). Refuses when
    CUDA is already in use in this process without it (e.g. an earlier grid cell in-process)."""
    if not deterministic or os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        return
    if torch.cuda.is_initialized():
        raise SrvError(f"--deterministic needs CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} set "
                       f"before this process's first cuBLAS call, and CUDA is already in use "
                       f"here: export CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE}, or train "
                       f"the run in a process of its own (srv train, or srv ablate --jobs 2)")
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE


@contextmanager
def device_flags_kept() -> Iterator[None]:
    """Put torch's process-wide flags that :func:`configure_device` sets back as they were on
    exit: a ``deterministic`` run must not leave the next run of the same process (grid cells
    in one process, ``srv bench``) deterministic, nor a fast one leave TF32 on."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, matmul.allow_tf32)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32,
         matmul.allow_tf32) = saved[2:]


def configure_device(device: torch.device, deterministic: bool = False) -> None:
    """Fast defaults on CUDA: cuDNN autotuning (fixed input shapes) and TF32 for the fp32
    matmuls and convolutions that remain under AMP (as timm's train.py allows).

    ``deterministic``: torch's reproducibility recipe instead (docs "Reproducibility"):
    ``torch.use_deterministic_algorithms(True)``, cuDNN autotuning and TF32 off, and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (:func:`cublas_workspace`; the engine sets it before
    the process touches CUDA). Slower, and it makes a resumed GPU run bitwise equal to an
    uninterrupted one; without it resume on GPU is statistically, not bitwise, equal
    (autotuned kernels and atomics vary run to run). These flags are process-wide: the engine
    restores them after a run (:func:`device_flags_kept`)."""
    if deterministic:
        if device.type == "cuda":
            cublas_workspace(True)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def native_bf16(device: torch.device) -> bool:
    """Whether the GPU computes in bf16 natively: compute capability 8.0 or newer (A100, H100),
    or ROCm. Not ``torch.cuda.is_bf16_supported()``: by default that also says True where bf16
    is only emulated (V100, T4), which runs, several times slower than fp16."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def check_amp(amp: str, device: torch.device) -> None:
    """Refuse bf16 on a GPU without native bf16 (e.g. V100, T4): emulated bf16 runs at a
    fraction of fp16's speed, and a torch that emulates nothing would only warn and run fp32
    while the run records ``amp = bf16``."""
    if amp == "bf16" and device.type == "cuda" and not native_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise SrvError(f"amp=bf16 needs a GPU with native bf16 (compute capability 8.0 or newer) "
                       f"and this one is {major}.{minor}: use --set amp=fp16 (with its loss "
                       f"scaler)")


def autocast(r: Recipe, device: torch.device) -> Any:
    """The recipe's autocast context (a no-op for ``amp = off``)."""
    if r.amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if r.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def compile_model(net: nn.Module, **options: Any) -> nn.Module:
    """``torch.compile(net)`` after ``torch._dynamo.reset()``: every model a process compiles
    (grid cells run one after another, ``srv bench``'s models) would otherwise count against
    dynamo's recompile limit (``torch._dynamo.config.recompile_limit``, 8) for the same
    ``forward`` code, and past it dynamo falls back to eager with only a log line."""
    torch._dynamo.reset()
    return torch.compile(net, **options)  # type: ignore[return-value]


def carry_non_finite(loss: torch.Tensor) -> torch.Tensor:
    """``loss`` times 1, or times NaN when it is not finite: the same value, but its backward
    makes every gradient NaN, which DDP's all-reduce spreads to every rank. A loss that is NaN
    alone (a NaN added to it, a term without parameters) would otherwise leave the gradients
    finite and the other ranks would step. On the device, no host sync."""
    return loss * torch.where(torch.isfinite(loss), 1.0, float("nan"))


def step_unless_skipped(opt: torch.optim.Optimizer, skipped: torch.Tensor,
                        scaler: torch.amp.GradScaler | None, fused: bool) -> None:
    """Step ``opt`` unless ``skipped`` (a device flag), without a host sync on CUDA.

    * fp16: ``GradScaler.step`` skips overflow steps and backs the scale off (as in DeiT). It
      passes ``found_inf`` into a fused optimizer's kernel; for a non-fused one GradScaler itself
      reads the flag on the host (torch's design), so fp16 runs use fused AdamW / Adam.
    * fused optimizers (torch's fused AdamW / Adam, and SGD outside fp16; used on CUDA) take the
      flag the way they take GradScaler's ``found_inf``: the kernel leaves weights, moments and
      step count alone.
    * on the CPU the host reads the flag, which costs nothing there.
    * otherwise (a non-fused optimizer on CUDA without a loss scaler) the optimizer steps: a
      non-finite step without a loss scaler ends the run as ``diverged`` at the next read-back
      of the step window, and the weights it leaves are never saved (the last checkpoint is
      the epoch before), so reading the flag every step would only stall the GPU.
    """
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    elif fused:
        opt.found_inf = skipped.float()  # type: ignore[attr-defined]
        opt.grad_scale = None  # type: ignore[attr-defined]
        try:
            opt.step()
        finally:
            del opt.found_inf, opt.grad_scale  # type: ignore[attr-defined]
    elif skipped.device.type != "cpu" or not bool(skipped):
        opt.step()


class HostEvent:
    """``torch.cuda.Event``'s timing interface on the host clock (``time.perf_counter``)."""

    def __init__(self) -> None:
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: HostEvent) -> float:
        """Milliseconds from this event to ``end``."""
        return 1000.0 * (end.t - self.t)


class EpochClock:
    """An epoch's time and the part of it the device waited for the host (mostly for data).

    Two events per step: *ready* when the batch has arrived (recorded before the step's work is
    queued) and *done* after it. On CUDA they are CUDA events, timed on the GPU's stream, so the
    gap from one step's *done* to the next step's *ready* is how long the GPU sat idle waiting
    for the host (data loading, host overhead): the data-wait figure means what the metrics
    table says, and the host's waits at the sync points do not land in it. On the CPU they are
    host timestamps (:class:`HostEvent`), which is the same thing there. Events are read at the
    existing sync points (:meth:`settle` after a flush of the step window) and at the end.
    """

    def __init__(self, device: torch.device, event: Any = None) -> None:
        self.make = event or (
            (lambda: torch.cuda.Event(enable_timing=True)) if device.type == "cuda"
            else HostEvent)
        self.start = self._now()
        self.last_done = self.start
        self.pending: list[tuple[Any, Any]] = []
        self._ready: Any = None
        self.data_time = 0.0

    def _now(self) -> Any:
        event = self.make()
        event.record()
        return event

    def batch_ready(self) -> None:
        self._ready = self._now()

    def step_done(self) -> None:
        self.pending.append((self._ready, self._now()))

    def settle(self) -> None:
        """Account the steps recorded so far (call where the host has synced anyway)."""
        for ready, done in self.pending:
            done.synchronize()
            self.data_time += max(self.last_done.elapsed_time(ready), 0.0) / 1000.0
            self.last_done = done
        self.pending.clear()

    def finish(self) -> tuple[float, float]:
        """``(epoch seconds, data-wait seconds)``."""
        end = self._now()
        self.settle()
        end.synchronize()
        return self.start.elapsed_time(end) / 1000.0, self.data_time


class TrainStep:
    """Forward, backward, clipping, SAM and the (possibly skipped) update of one batch.

    Everything but the forward / backward acts once per optimizer update, whatever
    ``accum_steps``: GradScaler's unscale and step, clipping and the gradient norm, the skip,
    SAM's perturbation (along the accumulated gradient; its second pass accumulates the same
    micro-batches, so SAM with accumulation is exactly SAM on the whole batch), and the
    update ratio; the trainer steps the schedule and the EMA per update too."""

    def __init__(self, net: nn.Module, params: list[nn.Parameter], optimizer: torch.optim.Optimizer,
                 criterion: nn.Module, r: Recipe, info: DistInfo,
                 scaler: torch.amp.GradScaler | None = None) -> None:
        self.net, self.params, self.optimizer, self.criterion = net, params, optimizer, criterion
        self.r, self.info, self.scaler = r, info, scaler
        # fused optimizers take GradScaler's found_inf and skip a bad step on the device
        self.fused = bool(getattr(optimizer, "_step_supports_amp_scaling", False))
        self.sam = bool(sam.base_optimizer(r.opt))
        # DDP's no_sync (also through a torch.compile wrapper, which forwards attributes): the
        # gradients of all but the last micro-batch stay local, one all-reduce per update
        self.no_sync = getattr(net, "no_sync", None) if info.distributed else None
        self._prev: list[torch.Tensor] | None = None  # weights before a measured update

    def forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast(self.r, self.info.device):
            out = self.net(x)
            return self.criterion(out.float(), y)

    def _backward(self, loss: torch.Tensor) -> None:
        if self.info.distributed:  # the gradient all-reduce carries a non-finite loss
            loss = carry_non_finite(loss)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _forward_backward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward and backward of the per-device batch; returns its (detached) mean loss.

        With ``accum_steps = n > 1`` the batch is cut into ``n`` equal micro-batches (the
        recipe refuses a per-device batch ``n`` does not divide) and each micro-batch's loss is
        scaled by ``1/n`` before its backward, as in timm's ``train.py`` (``--grad-accum-steps``):
        the summed gradient is the whole batch's mean-loss gradient, so one update equals the
        big batch's up to BatchNorm, which sees the micro-batches. Under DDP the micro-batches
        before the last run in ``no_sync()``: one all-reduce per update. Mixup has already mixed
        the whole batch, so it mixes the same pairs as without accumulation."""
        n = self.r.accum_steps
        if n == 1:
            loss = self.forward_loss(x, y)
            self._backward(loss)
            return loss.detach()
        total = torch.zeros((), device=x.device)
        for i, (xi, yi) in enumerate(zip(x.chunk(n), y.chunk(n), strict=True)):
            local = self.no_sync is not None and i < n - 1
            with self.no_sync() if local else nullcontext():  # type: ignore[misc]
                loss = self.forward_loss(xi, yi) / n
                self._backward(loss)
            total += loss.detach()
        return total

    def _grad_norm(self) -> torch.Tensor:
        """The global gradient norm (before clipping), as a tensor (no device sync)."""
        if self.r.clip_grad > 0:
            return torch.nn.utils.clip_grad_norm_(self.params, self.r.clip_grad)
        return torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])

    def _sam_second_pass(self, x: torch.Tensor, y: torch.Tensor,
                         skipped: torch.Tensor) -> torch.Tensor:
        """The gradient at the perturbed weights (none when the first pass was not finite);
        returns whether the second pass is non-finite (its loss or its gradient)."""
        moves = sam.perturb(self.params, self.r.sam_rho, skip=skipped)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._forward_backward(x, y)  # accumulated as the first pass: SAM stays exact
        sam.restore(self.params, moves)
        norm = self._grad_norm()
        return ~(torch.isfinite(norm) & torch.isfinite(loss))

    def __call__(self, x: torch.Tensor, y: torch.Tensor, measure_ratio: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One optimizer step; returns device tensors (loss, grad norm, skipped, update ratio).

        A step with a non-finite loss or gradient on any rank (either SAM pass) never reaches
        the weights on any rank: the optimizer skips it on the device. Under DDP the all-reduced
        gradients are the same on every rank and carry any rank's non-finite loss
        (:func:`carry_non_finite`), so their norm decides the same skip everywhere.
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._forward_backward(x, y)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = self._grad_norm()
        skipped = ~(torch.isfinite(grad_norm) & torch.isfinite(loss))
        if self.sam:  # SAM never runs with a loss scaler (refused): the flag is the skip
            skipped = skipped | self._sam_second_pass(x, y, skipped)
        ratio = None
        if measure_ratio:
            with torch.no_grad():
                if self._prev is None:
                    self._prev = [torch.empty_like(p) for p in self.params]
                torch._foreach_copy_(self._prev, [p.detach() for p in self.params])
                w = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(self._prev)))
        step_unless_skipped(self.optimizer, skipped, self.scaler, self.fused)
        if measure_ratio:
            assert self._prev is not None
            with torch.no_grad():
                torch._foreach_sub_(self._prev, [p.detach() for p in self.params])
                d = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(self._prev)))
                ratio = d / w.clamp_min(1e-12)
        return loss, grad_norm, skipped, ratio


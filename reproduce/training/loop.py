"""One training step, one epoch of them, and evaluation: the training loop, read in one file.

Laid out as DeiT's ``engine.py`` (``train_one_epoch``, ``evaluate``) and pycls's
``core/trainer.py`` (``train_epoch``, ``test_epoch``):

* :class:`TrainStep`: forward under autocast, backward (fp16 loss scaler), gradient
  accumulation, clipping, SAM (Foret et al. 2021) exact under accumulation, the device-side
  skip flag and the optimizer step that honours it; it returns a :class:`StepOutput`.
* :class:`EpochLoop`: batches, Mixup, the step, the lr schedule and the EMA per update, and the
  step window (:class:`StepWindow`) read back every ``sync_every`` steps into the epoch's
  signals (:class:`EpochStats`) and the divergence check (:class:`Diverged`). Timing
  (:mod:`.timing`), the trackers (:class:`StepLog`) and the console (``Reporter``) are
  collaborators it calls.
* :func:`evaluate`: top-1 / top-5 / loss over a val set sharded without padding.

The design (skips without host syncs, global step losses, the stability signals Wang et al.
study): docs/training.md, "The training loop". May import: :mod:`.builders`, :mod:`.ema`,
:mod:`.schedule`, :mod:`.timing`; :mod:`reproduce.data`, :mod:`reproduce.recipes`,
:mod:`reproduce.utils`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from reproduce.data.build import EvalLoader, TrainLoader
from reproduce.recipes.recipe import Recipe
from reproduce.training.builders import base_optimizer
from reproduce.training.ema import Ema
from reproduce.training.schedule import LrSchedule
from reproduce.training.timing import EpochClock
from reproduce.utils.distributed import DistInfo, all_reduce_sum
from reproduce.utils.reporter import Reporter

__all__ = ["Diverged", "EpochLoop", "EpochStats", "StepLog", "StepOutput", "StepRecord",
           "StepWindow", "TrainStep", "autocast", "carry_non_finite", "epoch_seed", "evaluate",
           "sam_perturb", "sam_restore", "seed_all", "step_unless_skipped"]


def seed_all(seed: int) -> None:
    """Seed Python's, numpy's and torch's RNGs (each epoch reseeds, so a resume replays them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of ``epoch`` (1-based) on ``rank``."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**31


# one step: forward, backward, SAM, the skip flag, the optimizer step


def autocast(r: Recipe, device: torch.device) -> Any:
    """The recipe's autocast context (a no-op for ``amp = off``)."""
    if r.amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if r.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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



@dataclass(frozen=True)
class StepOutput:
    """One optimizer step as the device left it: scalars still on the device (no host sync)."""

    loss: torch.Tensor  # the batch's mean loss on this rank
    grad_norm: torch.Tensor  # before clipping, after unscaling
    skipped: torch.Tensor  # bool: a non-finite loss or gradient, the weights were not updated
    update_ratio: torch.Tensor | None  # ||w_new - w_old|| / ||w_old||, when measured


@torch.no_grad()
def sam_perturb(params: list[torch.nn.Parameter], rho: float,
                skip: torch.Tensor | None = None) -> list[torch.Tensor | None]:
    """Move each parameter by ``rho * g / ||g||`` (global norm); return the weights before the
    move, which :func:`sam_restore` copies back (exact, as the reference implementation
    davda54/sam restores ``old_p``; ``w + e - e`` is not ``w`` in floating point).

    ``skip`` (a device flag: the first pass was not finite) makes every move exactly zero,
    decided on the device, so the weights are never moved along a non-finite gradient and the
    host does not wait for the flag."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = rho / (norm + 1e-12)
    moves: list[torch.Tensor | None] = []
    for p in params:
        if p.grad is None:
            moves.append(None)
            continue
        e = p.grad * scale.to(p.grad.dtype)
        if skip is not None:
            e = torch.where(skip, torch.zeros((), dtype=e.dtype, device=e.device), e)
        moves.append(p.detach().clone())
        p.add_(e)
    return moves


@torch.no_grad()
def sam_restore(params: list[torch.nn.Parameter], moves: list[torch.Tensor | None]) -> None:
    """Undo :func:`sam_perturb`: the weights it saved, copied back."""
    for p, old in zip(params, moves, strict=True):
        if old is not None:
            p.copy_(old)


class TrainStep:
    """Forward, backward, clipping, SAM and the (possibly skipped) update of one batch.

    Everything but the forward / backward acts once per optimizer update, whatever
    ``accum_steps``: GradScaler's unscale and step, clipping and the gradient norm, the skip,
    SAM's perturbation (along the accumulated gradient; its second pass accumulates the same
    micro-batches, so SAM with accumulation is exactly SAM on the whole batch), and the
    update ratio; the epoch loop steps the schedule and the EMA per update too."""

    def __init__(self, net: nn.Module, params: list[nn.Parameter], optimizer: torch.optim.Optimizer,
                 criterion: nn.Module, r: Recipe, info: DistInfo,
                 scaler: torch.amp.GradScaler | None = None) -> None:
        self.net, self.params, self.optimizer, self.criterion = net, params, optimizer, criterion
        self.r, self.info, self.scaler = r, info, scaler
        # fused optimizers take GradScaler's found_inf and skip a bad step on the device
        self.fused = bool(getattr(optimizer, "_step_supports_amp_scaling", False))
        self.sam = bool(base_optimizer(r.opt))
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
        moves = sam_perturb(self.params, self.r.sam_rho, skip=skipped)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._forward_backward(x, y)  # accumulated as the first pass: SAM stays exact
        sam_restore(self.params, moves)
        norm = self._grad_norm()
        return ~(torch.isfinite(norm) & torch.isfinite(loss))

    def __call__(self, x: torch.Tensor, y: torch.Tensor, measure_ratio: bool = False
                 ) -> StepOutput:
        """One optimizer step; returns its device scalars (loss, grad norm, skipped, and the
        update ratio when ``measure_ratio``).

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
        return StepOutput(loss, grad_norm, skipped, ratio)


# the step window: device scalars recorded per step, read back every ``sync_every`` steps


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step as the host sees it after a flush."""

    step: int  # 1-based optimizer step (update counter) of the run
    loss: float  # mean over ranks
    grad_norm: float  # before clipping, after unscaling
    skipped: bool  # non-finite loss or gradient: the weights were not updated
    update_ratio: float | None  # None when not measured at this step


class StepWindow:
    """A device buffer of up to ``size`` steps: loss, gradient norm, skipped flag, update ratio."""

    def __init__(self, size: int, device: torch.device) -> None:
        self.size = size
        self.buf = torch.zeros(4, size, dtype=torch.float32, device=device)
        self.first_step = 0
        self.count = 0

    def record(self, step: int, out: StepOutput) -> None:
        """Store step ``step``'s device scalars (no device sync)."""
        if self.count == 0:
            self.first_step = step
        k = self.count
        self.buf[0, k] = out.loss.detach().float()
        self.buf[1, k] = out.grad_norm.detach().float()
        self.buf[2, k] = out.skipped.float()
        self.buf[3, k] = (out.update_ratio.detach().float() if out.update_ratio is not None
                          else -1.0)
        self.count += 1

    @property
    def full(self) -> bool:
        return self.count >= self.size

    def flush(self, info: DistInfo) -> list[StepRecord]:
        """Read the window back (one sync; one all-reduce of the losses under DDP) and empty it."""
        if self.count == 0:
            return []
        values = self.buf[:, : self.count].clone()
        if info.distributed:
            losses = values[0].contiguous()
            dist.all_reduce(losses, op=dist.ReduceOp.SUM)
            values[0] = losses / info.world_size
        loss, norm, skipped, ratio = values.tolist()
        out = [StepRecord(self.first_step + j, loss[j], norm[j], skipped[j] > 0,
                          ratio[j] if ratio[j] >= 0 else None) for j in range(self.count)]
        self.count = 0
        return out


@dataclass
class EpochStats:
    """One epoch's signals, accumulated on the host from flushed windows."""

    lr: float = 0.0  # the lr of the epoch's first update
    loss_sum: float = 0.0
    steps: int = 0  # steps that updated the weights
    skipped_steps: int = 0
    images: int = 0
    grad_norm_sum: float = 0.0
    grad_norm_max: float | None = None
    spikes: int = 0
    max_update_ratio: float | None = None
    data_time: float = 0.0
    time: float = 0.0
    skipped_at: list[int] = field(default_factory=list)  # steps skipped (first few kept)

    def add(self, rec: StepRecord, loss_mean: float | None, spike_factor: float
            ) -> float | None:
        """Account one step; returns the updated running mean of the loss (spike baseline)."""
        if rec.skipped:
            self.skipped_steps += 1
            if len(self.skipped_at) < 20:
                self.skipped_at.append(rec.step)
            return loss_mean
        self.steps += 1
        self.loss_sum += rec.loss
        self.grad_norm_sum += rec.grad_norm
        self.grad_norm_max = max(self.grad_norm_max or 0.0, rec.grad_norm)
        if rec.update_ratio is not None:
            self.max_update_ratio = max(self.max_update_ratio or 0.0, rec.update_ratio)
        if loss_mean is not None and rec.loss > spike_factor * loss_mean:
            self.spikes += 1
        return rec.loss if loss_mean is None else 0.9 * loss_mean + 0.1 * rec.loss

    @property
    def train_loss(self) -> float | None:
        return self.loss_sum / self.steps if self.steps else None

    @property
    def grad_norm_mean(self) -> float | None:
        return self.grad_norm_sum / self.steps if self.steps else None


class Diverged(Exception):
    """A non-finite step (or a collapsed fp16 loss scale): the run ends as ``diverged``."""

    status = "diverged"  # what trackers record (tracking.Tracking.__exit__)

    def __init__(self, epoch: int, step: int, reason: str) -> None:
        super().__init__(reason)
        self.epoch, self.step, self.reason = epoch, step, reason


class StepLog(Protocol):
    """Where the read-back steps go besides the epoch's signals (the trackers)."""

    def steps(self, records: list[StepRecord], lr_of: Callable[[int], float]) -> None: ...


# one epoch: batches -> step -> schedule -> EMA -> the window's read-back


class EpochLoop:
    """One epoch of training, as DeiT's ``train_one_epoch``: what it touches, the run's update
    counter and the running loss mean (the spike baseline), both kept in checkpoints."""

    def __init__(self, step_fn: TrainStep, loader: TrainLoader, steps_per_epoch: int,
                 mixup: Any, sched: LrSchedule, ema: Ema | None, model: nn.Module,
                 reporter: Reporter, tracker: StepLog) -> None:
        self.step_fn: Callable[..., StepOutput] = step_fn
        self.net, self.optimizer, self.scaler = step_fn.net, step_fn.optimizer, step_fn.scaler
        self.r, self.info = step_fn.r, step_fn.info
        self.loader, self.steps_per_epoch, self.mixup = loader, steps_per_epoch, mixup
        self.sched, self.ema, self.model = sched, ema, model  # model: unwrapped, as the EMA's
        self.reporter, self.tracker = reporter, tracker
        self.step = 0  # optimizer updates done (skipped fp16 steps count, as in timm and DeiT)
        self.loss_mean: float | None = None
        self.step_at_epoch_start = 0

    def _measure_update(self) -> bool:
        every = self.r.update_ratio_every
        return every > 0 and (self.step + 1) % every == 0

    def run(self, epoch: int) -> EpochStats:
        """Train epoch ``epoch`` (1-based) and return its signals."""
        r, info = self.r, self.info
        seed_all(epoch_seed(r.seed, epoch, info.rank))
        self.loader.set_epoch(epoch)
        self.sched.begin_epoch(epoch)
        self.net.train()
        stats = EpochStats(lr=self.optimizer.param_groups[0]["lr"])  # the first update's lr
        window = StepWindow(r.sync_every, info.device)
        self.step_at_epoch_start = self.step
        self.reporter.start_epoch(epoch, r.epochs, self.steps_per_epoch)
        clock = EpochClock(info.device)
        for x, y in self.loader:
            clock.batch_ready()
            if self.mixup is not None:
                x, y = self.mixup(x, y)
            out = self.step_fn(x, y, measure_ratio=self._measure_update())
            self.step += 1
            self.reporter.step(self.step - self.step_at_epoch_start)  # the bar: host counter
            window.record(self.step, out)
            self.sched.after_update(self.step)
            if self.ema is not None:
                self.ema.update(self.model, step=self.step)
            stats.images += x.shape[0] * info.world_size
            if window.full:
                self._flush(window, stats, epoch, clock)
            clock.step_done()
        self._flush(window, stats, epoch, clock)
        self.reporter.end_epoch()
        stats.time, stats.data_time = clock.finish()
        return stats

    def _flush(self, window: StepWindow, stats: EpochStats, epoch: int,
               clock: EpochClock | None = None) -> None:
        """Read the step window back (the clock's events too, now that the host has synced)
        and hand its steps to the epoch's signals, the trackers, the divergence check and the
        bar, in that order."""
        records = window.flush(self.info)
        if clock is not None:
            clock.settle()
        for rec in records:
            self.loss_mean = stats.add(rec, self.loss_mean, self.r.spike_factor)
        start = self.step_at_epoch_start
        self.tracker.steps(records, lambda step: self.sched.lr_at(epoch, step - start - 1))
        self._check_finite(records, stats, epoch)
        if records:  # the lr the last read-back update ran at, as the trackers log it
            last = records[-1]
            self.reporter.step(last.step - start, f"loss {last.loss:.4f} "
                               f"lr {self.sched.lr_at(epoch, last.step - start - 1):.2e}")

    def _check_finite(self, records: list[StepRecord], stats: EpochStats, epoch: int) -> None:
        """Raise :class:`Diverged` on a skipped step without a loss scaler, or when the fp16
        loss scale has collapsed below ``amp_min_scale``."""
        bad = [rec for rec in records if rec.skipped]
        if bad and self.scaler is None:
            first = bad[0]
            what = "loss" if not math.isfinite(first.loss) else "gradient norm"
            raise Diverged(epoch, first.step,
                           f"non-finite {what} at epoch {epoch}, step {first.step} "
                           f"(lr {self.optimizer.param_groups[0]['lr']:.3g})")
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            if scale < self.r.amp_min_scale:
                raise Diverged(epoch, records[-1].step,
                               f"fp16 loss scale collapsed to {scale:.3g} (below amp_min_scale "
                               f"= {self.r.amp_min_scale:g}) at epoch {epoch}, step "
                               f"{records[-1].step}: {stats.skipped_steps} of this epoch's "
                               f"steps overflowed")


# evaluation: every val image counted once over the ranks


@torch.no_grad()
def evaluate(model: nn.Module, loader: EvalLoader, info: DistInfo, r: Recipe | None = None,
             channels_last: bool = False) -> dict[str, float]:
    """Top-1 / top-5 (%), mean cross-entropy and the number of images, summed over ranks.

    ``loader`` yields ``(x, y)`` batches (moved to the device here if they are not there yet);
    counts accumulate on the device and are read back once. ``model`` must not be wrapped in
    DDP: DDP's forward may broadcast buffers (a collective), and a rank whose val shard is
    empty makes no forward, so the other ranks would wait for it. The only collective here is
    the final sum.
    """
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=info.device)  # top1, top5, loss
    n = 0
    ctx = autocast(r, info.device) if r is not None else nullcontext()
    for x, y, *_ in loader:  # imagefolder items carry a bad-file index
        x = x.to(info.device, non_blocking=True)
        y = y.to(info.device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ctx:
            out = model(x)
        out = out.float()
        top = out.topk(min(5, out.shape[1]), dim=1).indices
        hits = top.eq(y[:, None])
        sums += torch.stack([hits[:, 0].sum().double(), hits.any(dim=1).sum().double(),
                             F.cross_entropy(out, y, reduction="sum").double()])
        n += y.numel()
    correct1, correct5, loss_sum, total = all_reduce_sum([*sums.tolist(), n], info)
    total = max(total, 1)
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total,
            "loss": loss_sum / total, "n": int(total)}

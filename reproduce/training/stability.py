"""Per-step stability signals, kept on the device and read back once every N steps.

Wang et al. study how stably ViTs train (docs/paper.md §1), so the engine records, per epoch:
the gradient norm (mean / max over the steps that updated the weights), loss spikes, the largest
update ratio ``||w_new - w_old|| / ||w_old||`` and, under fp16, the steps the loss scaler
skipped. Three rules make these comparable across runs:

* **Global values.** The loss of a step is the mean over all ranks (one all-reduce of the window's
  losses every N steps, never one per step); gradient norms and update ratios are already
  global under DDP (gradients are averaged before the optimizer sees them).
* **Skipped steps are not steps.** A step whose gradients are not finite does not touch the
  weights (the optimizer skips it on the device), and is counted in ``skipped_steps`` and left out
  of the gradient-norm statistics, the spike count and the update ratio, so a few fp16 overflows
  never turn an epoch's statistics into inf / NaN.
* **No host stalls.** Recording a step only writes into a preallocated device buffer; the host
  reads the buffer (one device sync) when it is full or the epoch ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from reproduce.utils.distributed import DistInfo

__all__ = ["StepWindow", "StepRecord", "EpochStats"]


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

    def record(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor,
               skipped: torch.Tensor, update_ratio: torch.Tensor | None) -> None:
        """Store step ``step``'s device scalars (no device sync)."""
        if self.count == 0:
            self.first_step = step
        k = self.count
        self.buf[0, k] = loss.detach().float()
        self.buf[1, k] = grad_norm.detach().float()
        self.buf[2, k] = skipped.float()
        self.buf[3, k] = update_ratio.detach().float() if update_ratio is not None else -1.0
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

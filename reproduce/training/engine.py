"""The training and evaluation engine: timm components in a loop that never silently goes wrong.

* Optimizer from ``timm.optim.create_optimizer_v2`` with the recipe source's weight-decay
  exemptions (:mod:`.optim`), timm's cosine schedule stepped as DeiT / pycls step it
  (:mod:`.schedule`), label smoothing / soft-target loss, timm ``Mixup``, drop path, repeated
  augmentation under DDP, the EMA as DeiT or pycls keep it (:mod:`.ema`, timm ``ModelEmaV3``),
  AMP, clipping, SAM. The refusals are :func:`.runnable.refuse`, shared with ``--dry-run``.
* Every run is a directory (:mod:`reproduce.training.runs`); rerunning the same command resumes from
  ``last.pt`` and ends exactly where an uninterrupted run would: every epoch reseeds all RNGs
  from (seed, epoch, rank), so resuming at an epoch boundary replays the same randomness.
* Divergence is a result (Wang et al. study stability): a non-finite loss or gradient stops the
  run at once with status ``diverged`` and leaves the last good checkpoint untouched.
* Stability signals per epoch: gradient norm (mean / max over steps), loss spikes (a step whose
  loss exceeds ``spike_factor`` x the running mean) and the largest update ratio
  ``||w_new - w_old|| / ||w_old||``.
* Evaluation shards the val set without padding and sums counts over ranks, so every image is
  counted exactly once whatever the world size.
"""

from __future__ import annotations

import math
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from reproduce.data.build import build_train_loader, build_val_loader
from reproduce.data.datasets import Datasets, build_datasets
from reproduce.errors import SrvError
from reproduce.recipes.recipe import Recipe
from reproduce.training import sam
from reproduce.training.config import RunConfig, config_diff
from reproduce.training.runnable import build_mixup_loss, build_model, build_optimization, refuse
from reproduce.training.runs import (
    RunDir,
    atomic_torch_save,
    atomic_write_json,
    environment,
    git_state,
)
from reproduce.training.stability import EpochStats, StepWindow
from reproduce.utils.distributed import (
    DistInfo,
    all_reduce_sum,
    broadcast_from_main,
    cleanup,
    init_distributed,
)
from reproduce.utils.progress import Reporter

__all__ = ["RunOutcome", "train", "evaluate", "val_loader", "load_checkpoint_model",
           "EXIT_DIVERGED", "EXIT_FAILED"]

EXIT_FAILED = 1
EXIT_DIVERGED = 3


@dataclass
class RunOutcome:
    """How a call to :func:`train` ended."""

    status: str  # completed | diverged | failed
    run_dir: Path
    result: dict[str, Any] | None = None
    reason: str | None = None
    is_main: bool = True  # rank 0 (the one that reports)

    @property
    def exit_code(self) -> int:
        return {"completed": 0, "diverged": EXIT_DIVERGED}.get(self.status, EXIT_FAILED)


class _Diverged(Exception):
    def __init__(self, epoch: int, step: int, reason: str) -> None:
        super().__init__(reason)
        self.epoch, self.step, self.reason = epoch, step, reason


# --- building blocks -------------------------------------------------------------------------


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**31


def val_loader(data: Datasets, r: Recipe, info: DistInfo) -> Any:
    """Val images sharded over ranks without padding (each image counted exactly once)."""
    return build_val_loader(data.val, r, info)


def configure_device(device: torch.device) -> None:
    """Fast defaults on CUDA: cuDNN autotuning (fixed input shapes) and TF32 for the fp32
    matmuls and convolutions that remain under AMP (as timm's train.py allows)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def _autocast(r: Recipe, device: torch.device) -> Any:
    if r.amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if r.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def step_unless_skipped(opt: torch.optim.Optimizer, skipped: torch.Tensor,
                        scaler: torch.amp.GradScaler | None, fused: bool) -> None:
    """Step ``opt`` unless ``skipped`` (a device flag), without a host sync on CUDA.

    * fp16: ``GradScaler.step`` skips overflow steps and backs the scale off (as in DeiT).
    * fused optimizers (torch's fused AdamW / SGD, used on CUDA) take the flag the way they
      take GradScaler's ``found_inf``: the kernel leaves weights, moments and step count alone.
    * otherwise (the CPU's foreach path) the host reads the flag, which costs nothing there.
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
    elif not bool(skipped):
        opt.step()


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),)  # type: ignore[arg-type]
                    + tuple(state["python"][2:]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- evaluation ------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, info: DistInfo, r: Recipe | None = None,
             channels_last: bool = False) -> dict[str, float]:
    """Top-1 / top-5 (%), mean cross-entropy and the number of images, summed over ranks.

    ``loader`` yields ``(x, y)`` batches (moved to the device here if they are not there yet);
    counts accumulate on the device and are read back once.
    """
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=info.device)  # top1, top5, loss
    n = 0
    ctx = _autocast(r, info.device) if r is not None else nullcontext()
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


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# --- the loop --------------------------------------------------------------------------------


class Trainer:
    """Everything a run holds: model, optimizer, schedule, EMA, data and its directory."""

    def __init__(self, cfg: RunConfig, run: RunDir, info: DistInfo, reporter: Reporter) -> None:
        self.cfg, self.run, self.info, self.reporter = cfg, run, info, reporter
        r = self.r = cfg.recipe
        refuse(cfg, info.world_size)
        configure_device(info.device)
        _seed_all(r.seed)
        self.data = build_datasets(r, train=r.loader != "dali")
        if r.aug_repeats and not info.distributed:
            reporter.line(f"note: aug_repeats={r.aug_repeats} acts only under DDP (as in "
                          f"DeiT); this 1-process run samples without repeats")
        self.train_loader = build_train_loader(self.data.train, r, info)
        self.val_loader = build_val_loader(self.data.val, r, info)
        self.steps_per_epoch = len(self.train_loader)
        self.derived = cfg.derived(info.world_size, self.steps_per_epoch)
        self.lr = self.derived["lr"]

        model = build_model(cfg, self.data.num_classes)
        if r.sync_bn and info.distributed and info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif r.sync_bn and info.distributed:
            reporter.line("note: sync_bn needs CUDA (torch's SyncBatchNorm); on CPU each rank "
                          "keeps its own BN statistics")
        model.to(info.device)
        if r.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model  # unwrapped: what checkpoints hold
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.params_m = sum(p.numel() for p in model.parameters()) / 1e6
        self.optimizer, self.sched, _, self.ema = build_optimization(
            model, r, self.lr, self.steps_per_epoch, fused=info.device.type == "cuda")
        # fused optimizers take GradScaler's found_inf and skip a bad step on the device
        self.fused = bool(getattr(self.optimizer, "_step_supports_amp_scaling", False))
        self.scaler = (torch.amp.GradScaler(info.device.type, init_scale=r.amp_init_scale)
                       if r.amp == "fp16" else None)
        self.sam = bool(sam.base_optimizer(r.opt))
        self._prev: list[torch.Tensor] | None = None  # weights before a measured update
        net: nn.Module = model
        if info.distributed:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(
                model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
        if r.compile:
            net = torch.compile(net)  # type: ignore[assignment]
        self.net = net
        self.mixup, self.criterion = build_mixup_loss(r, self.data.num_classes)
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer updates done (skipped fp16 steps count, as in timm and DeiT)
        self.best_top1 = -1.0
        self.best_epoch = 0
        self.loss_mean: float | None = None
        self.rows: list[dict[str, Any]] = []  # metrics of finished epochs (same on every rank)
        self.bad_files: dict[str, int] = {}  # unreadable images met, path -> times replaced

    # checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "loss_mean": self.loss_mean,
            "bad_files": dict(self.bad_files),
            "rng": _rng_state(),
            "config": self.cfg.to_dict(),
        }

    def load(self, path: Path) -> None:
        from reproduce.training.checkpoints import read_checkpoint

        ckpt = read_checkpoint(path, map_location=self.info.device)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["scheduler"] is not None:
            self.sched.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt["scaler"] is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.best_top1, self.best_epoch = ckpt["best_top1"], ckpt["best_epoch"]
        self.loss_mean = ckpt["loss_mean"]
        self.bad_files = dict(ckpt.get("bad_files") or {})
        _set_rng_state(ckpt["rng"])
        self.rows = [row for row in self.run.metrics() if row["epoch"] <= self.epoch]

    # one step
    def _grad_norm(self) -> torch.Tensor:
        """The global gradient norm (before clipping), as a tensor (no device sync)."""
        if self.r.clip_grad > 0:
            return torch.nn.utils.clip_grad_norm_(self.params, self.r.clip_grad)
        return torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])

    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with _autocast(self.r, self.info.device):
            out = self.net(x)
            return self.criterion(out.float(), y)

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def _sam_second_pass(self, x: torch.Tensor, y: torch.Tensor) -> None:
        moves = sam.perturb(self.params, self.r.sam_rho)
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(self._forward_loss(x, y))
        sam.restore(self.params, moves)
        if self.r.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.r.clip_grad)

    def _apply_update(self, skipped: torch.Tensor) -> None:
        step_unless_skipped(self.optimizer, skipped, self.scaler, self.fused)

    def _measure_update(self) -> bool:
        every = self.r.update_ratio_every
        return every > 0 and (self.step + 1) % every == 0

    def train_step(self, x: torch.Tensor, y: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One optimizer step; returns device tensors (loss, grad norm, skipped, update ratio).

        A step with a non-finite loss or gradient never reaches the weights: the optimizer
        skips it on the device (the host finds out at the next flush of the step window).
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._forward_loss(x, y)
        self._backward(loss)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = self._grad_norm()
        skipped = ~(torch.isfinite(grad_norm) & torch.isfinite(loss.detach()))
        if self.sam:
            if bool(skipped):  # SAM must not perturb the weights along a non-finite gradient
                return loss, grad_norm, skipped, None
            self._sam_second_pass(x, y)
        ratio = None
        if self._measure_update():
            with torch.no_grad():
                if self._prev is None:
                    self._prev = [torch.empty_like(p) for p in self.params]
                torch._foreach_copy_(self._prev, [p.detach() for p in self.params])
                w = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(self._prev)))
        self._apply_update(skipped)
        if self._prev is not None and self._measure_update():
            with torch.no_grad():
                torch._foreach_sub_(self._prev, [p.detach() for p in self.params])
                d = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(self._prev)))
                ratio = d / w.clamp_min(1e-12)
        return loss, grad_norm, skipped, ratio

    # one epoch
    def _flush(self, window: StepWindow, stats: EpochStats, epoch: int) -> None:
        """Read the step window back and account it; raise on divergence."""
        records = window.flush(self.info)
        for rec in records:
            self.loss_mean = stats.add(rec, self.loss_mean, self.r.spike_factor)
        bad = [rec for rec in records if rec.skipped]
        if bad and self.scaler is None:
            first = bad[0]
            what = "loss" if not math.isfinite(first.loss) else "gradient norm"
            raise _Diverged(epoch, first.step,
                            f"non-finite {what} at epoch {epoch}, step {first.step} "
                            f"(lr {self.optimizer.param_groups[0]['lr']:.3g})")
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            if scale < self.r.amp_min_scale:
                raise _Diverged(epoch, records[-1].step,
                                f"fp16 loss scale collapsed to {scale:.3g} (below amp_min_scale "
                                f"= {self.r.amp_min_scale:g}) at epoch {epoch}, step "
                                f"{records[-1].step}: {stats.skipped_steps} of this epoch's "
                                f"steps overflowed")
        if records:
            last = records[-1]
            self.reporter.step(last.step - self.step_at_epoch_start,
                               f"loss {last.loss:.4f} "
                               f"lr {self.optimizer.param_groups[0]['lr']:.2e}")

    def train_epoch(self) -> EpochStats:
        r, info = self.r, self.info
        epoch = self.epoch + 1
        _seed_all(_epoch_seed(r.seed, epoch, info.rank))
        self.train_loader.set_epoch(epoch)
        self.sched.begin_epoch(epoch)
        self.net.train()
        stats = EpochStats(lr=self.optimizer.param_groups[0]["lr"])  # the first update's lr
        window = StepWindow(r.sync_every, info.device)
        self.step_at_epoch_start = self.step
        self.reporter.start_epoch(epoch, r.epochs, self.steps_per_epoch)
        t_epoch = t_last = time.perf_counter()
        for x, y in self.train_loader:
            stats.data_time += time.perf_counter() - t_last
            if self.mixup is not None:
                x, y = self.mixup(x, y)
            loss, grad_norm, skipped, ratio = self.train_step(x, y)
            self.step += 1
            window.record(self.step, loss, grad_norm, skipped, ratio)
            self.sched.after_update(self.step)
            if self.ema is not None:
                self.ema.update(self.model, step=self.step)
            stats.images += x.shape[0] * info.world_size
            if window.full:
                self._flush(window, stats, epoch)
            t_last = time.perf_counter()
        self._flush(window, stats, epoch)
        self.reporter.end_epoch()
        stats.time = time.perf_counter() - t_epoch
        return stats

    def _take_bad_files(self) -> int:
        """Unreadable images the loaders met since the last call (this epoch), over all ranks:
        each file is warned about once per run (rank 0); returns the number of distinct files
        met this epoch."""
        local: list[tuple[str, str]] = []  # (path, warning)
        for loader in (self.train_loader, self.val_loader):
            indices, loader.bad_indices = getattr(loader, "bad_indices", []), []
            for index in indices:  # only loaders over image folders meet unreadable files
                name = loader.path_of(index)
                local.append((name, "" if name in self.bad_files else loader.describe_bad(index)))
        found = local
        if self.info.distributed and all_reduce_sum([len(local)], self.info)[0]:
            import torch.distributed as dist  # every rank's files, named on rank 0

            gathered: list[Any] = [None] * self.info.world_size
            dist.all_gather_object(gathered, local)
            found = [item for part in gathered for item in part]
        for name, warning in found:
            if name not in self.bad_files:
                self.reporter.line(f"warning: {warning}")
            self.bad_files[name] = self.bad_files.get(name, 0) + 1
        return len({name for name, _ in found})

    def _sync_for_eval(self) -> None:
        """Under DDP, give every rank rank 0's BN statistics and EMA before evaluating.

        Parameters agree on every rank, buffers do not: without SyncBN each rank's BatchNorm
        running statistics follow its own batches (DDP re-broadcasts rank 0's at each forward),
        and an EMA of them drifts apart per rank. Rank 0's are what the checkpoint holds, so the
        epoch's val metrics are those of the saved weights (``srv eval`` agrees) and a resumed
        run continues from exactly the state an uninterrupted one has."""
        if not self.info.distributed:
            return
        tensors = list(self.model.buffers())
        if self.ema is not None:
            tensors += list(self.ema.module.state_dict().values())
        broadcast_from_main(tensors, self.info)

    def run_epochs(self) -> dict[str, Any]:
        r, info = self.r, self.info
        t_start = time.perf_counter()
        while self.epoch < r.epochs:
            stats = self.train_epoch()
            self._sync_for_eval()
            val = evaluate(self.net, self.val_loader, info, r, r.channels_last)
            self.epoch += 1
            row: dict[str, Any] = {
                "epoch": self.epoch,
                "step": self.step,
                "lr": stats.lr,
                "lr_end": self.optimizer.param_groups[0]["lr"],
                "train_loss": _finite_or_none(stats.train_loss),
                "grad_norm_mean": _finite_or_none(stats.grad_norm_mean),
                "grad_norm_max": _finite_or_none(stats.grad_norm_max),
                "loss_spikes": stats.spikes,
                "max_update_ratio": _finite_or_none(stats.max_update_ratio),
                "skipped_steps": stats.skipped_steps,
                "val_top1": val["top1"],
                "val_top5": val["top5"],
                "val_loss": _finite_or_none(val["loss"]),
                "n_val": val["n"],
                "img_per_s": stats.images / max(stats.time, 1e-9),
                "data_wait_frac": stats.data_time / max(stats.time, 1e-9),
                "time_s": stats.time,
            }
            if self.scaler is not None:
                row["loss_scale"] = self.scaler.get_scale()
            if self.ema is not None:
                ema_val = evaluate(self.ema.module, self.val_loader, info, r, r.channels_last)
                row["ema_top1"], row["ema_top5"] = ema_val["top1"], ema_val["top5"]
            bad = self._take_bad_files()
            if bad or self.bad_files:
                row["bad_images"] = bad
            improved = val["top1"] > self.best_top1
            if improved:
                self.best_top1, self.best_epoch = val["top1"], self.epoch
            if info.is_main:
                # metrics first: a kill before last.pt is written leaves an extra row that a
                # resume drops (rows past the checkpoint's epoch are recomputed); last.pt before
                # best.pt, so last.pt is never behind best.pt
                self.run.write_metrics([*self.rows, row])
                atomic_torch_save(self.state(), self.run.last_ckpt)
                if improved:
                    atomic_torch_save({"model": self.model.state_dict(),
                                       "ema": self.ema.module.state_dict() if self.ema else None,
                                       "epoch": self.epoch, "top1": val["top1"],
                                       "config": self.cfg.to_dict()}, self.run.best_ckpt)
                self.run.write_status("running", self.epoch, self.step)
            self.rows.append(row)
            skipped = f"  skipped {stats.skipped_steps}" if self.scaler is not None else ""
            loss_text = f"{row['train_loss']:.4f}" if row["train_loss"] is not None else "n/a"
            grad_text = (f"{row['grad_norm_mean']:.2f}" if row["grad_norm_mean"] is not None
                         else "n/a")
            self.reporter.line(
                f"epoch {self.epoch}/{r.epochs}  loss {loss_text}  "
                f"val top-1 {val['top1']:.2f}  top-5 {val['top5']:.2f}  "
                f"lr {stats.lr:.2e}  |g| {grad_text}{skipped}  "
                f"{row['img_per_s']:.0f} img/s  data {100 * row['data_wait_frac']:.0f}%")
        rows = self.rows
        last = rows[-1] if rows else {}

        def peak(key: str) -> float | None:
            values = [m[key] for m in rows if m.get(key) is not None]
            return max(values) if values else None

        return {
            "model": self.cfg.model,
            "name": self.cfg.name,
            "recipe": self.cfg.recipe_name,
            "seed": r.seed,
            "config_hash": self.cfg.hash,
            "run_dir": str(self.run.path),
            "top1": last.get("val_top1"),
            "top5": last.get("val_top5"),
            "ema_top1": last.get("ema_top1"),
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "epochs": r.epochs,
            "steps": self.step,
            "n_val": last.get("n_val"),
            "params_m": round(self.params_m, 4),
            "grad_norm_max": peak("grad_norm_max"),
            "loss_spikes": sum(m["loss_spikes"] for m in rows),
            "max_update_ratio": peak("max_update_ratio"),
            "skipped_steps": sum(m.get("skipped_steps", 0) for m in rows),
            "bad_images": len(self.bad_files),  # distinct unreadable files met
            "bad_files": sorted(self.bad_files)[:100],
            "train_time_s": round(sum(m["time_s"] for m in rows), 2),
            "wall_time_s": round(time.perf_counter() - t_start, 2),
            "world_size": info.world_size,
            **git_state(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def _prepare_run_dir(run: RunDir, cfg: RunConfig, restart: bool, info: DistInfo) -> str | None:
    """Check an existing run directory; returns its final status when it has one to keep."""
    old = run.config()
    status = run.status() or {}
    if old is not None and not restart:
        recorded = {k: v for k, v in old.items() if k not in ("derived", "data")}
        diff = config_diff(recorded, cfg.to_dict())
        if diff:
            raise SrvError(f"{run.path} holds a run with another config ({'; '.join(diff)}): "
                           f"use a new --run-dir, or --restart to discard it")
    if not restart and status.get("status") in ("completed", "diverged"):
        if status["status"] == "diverged" or run.result() is not None:
            return status["status"]
    if restart and run.path.exists() and info.is_main:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = run.path.with_name(f"{run.path.name}.old-{stamp}")
        shutil.move(str(run.path), backup)
    return None


def train(cfg: RunConfig, runs_root: Path | str = "runs", restart: bool = False,
          run_dir: Path | str | None = None, progress: bool | None = None) -> RunOutcome:
    """Train ``cfg`` in ``runs_root/<name>-<hash>`` (or ``run_dir``), resuming if possible.

    Returns the outcome; a completed or diverged run is not retrained (``restart`` moves the old
    directory aside to ``<dir>.old-<time>`` and starts again). Raises :class:`SrvError` for bad
    input (data, batch, model).
    """
    info = init_distributed(cfg.recipe.device)
    run = RunDir(Path(run_dir) if run_dir else Path(runs_root) / cfg.run_name)
    try:
        final = _prepare_run_dir(run, cfg, restart, info)
        if final is not None:
            return RunOutcome(final, run.path, run.result(), (run.status() or {}).get("reason"))
        reporter = Reporter(enabled=info.is_main, rich=progress)
        for note in cfg.notes:
            reporter.line(note)
        trainer = Trainer(cfg, run, info, reporter)
        _check_same_data(run, trainer.data.fingerprint)
        resumed = run.last_ckpt.exists()
        if resumed:
            trainer.load(run.last_ckpt)
            if info.is_main:
                run.truncate_metrics(trainer.epoch)
        if info.is_main:
            atomic_write_json(run.config_path, {**cfg.to_dict(), "derived": trainer.derived,
                                                "data": trainer.data.fingerprint})
            env = environment(info.device, info.world_size)
            env.update(params_m=trainer.params_m, data=trainer.data.description,
                       eval_transform=trainer.data.eval_transform, resumed_from_epoch=trainer.epoch)
            atomic_write_json(run.path / "env.json", env)
            run.write_status("running", trainer.epoch, trainer.step)
        reporter.line(
            f"{'resuming' if resumed else 'training'} {cfg.model} ({trainer.params_m:.2f}M params)"
            f" with recipe {cfg.recipe_name} from epoch {trainer.epoch}/{cfg.recipe.epochs} "
            f"in {run.path}\n  data: {trainer.data.description}; global batch "
            f"{trainer.derived['global_batch']} = {info.world_size} x "
            f"{trainer.derived['per_device_batch']}; lr {trainer.lr:.3g} "
            f"({trainer.derived['lr_rule']}); warmup {trainer.derived['warmup_steps']} steps")
        try:
            result = trainer.run_epochs()
        except _Diverged as d:
            if info.is_main:
                run.write_status("diverged", d.epoch, d.step, d.reason)
            reporter.line(f"diverged: {d.reason}; last good checkpoint kept in {run.path}")
            return RunOutcome("diverged", run.path, None, d.reason, info.is_main)
        if info.is_main:
            atomic_write_json(run.result_path, result)
            run.write_status("completed", trainer.epoch, trainer.step)
        reporter.line(f"done: final val top-1 {result['top1']:.2f}% (best "
                      f"{result['best_top1']:.2f}% at epoch {result['best_epoch']}); "
                      f"results in {run.path}")
        return RunOutcome("completed", run.path, result, is_main=info.is_main)
    except torch.OutOfMemoryError:
        _mark_failed(run, info, "out of memory")
        raise SrvError(f"out of memory with a per-device batch of "
                       f"{cfg.recipe.batch_size // info.world_size}: lower --batch-size (and "
                       f"scale --lr), or use --set amp=bf16") from None
    except SrvError:
        raise
    except KeyboardInterrupt:
        _mark_failed(run, info, "interrupted")
        raise
    except Exception as err:
        _mark_failed(run, info, f"{type(err).__name__}: {err}")
        raise
    finally:
        cleanup()


def _check_same_data(run: RunDir, now: dict[str, Any]) -> None:
    """Refuse to continue a run on a data set that is not the one it started on (the data's
    path may change: the hash leaves it out so moved data keeps its runs)."""
    before = (run.config() or {}).get("data") or {}
    changed = [k for k in ("dataset", "num_classes", "classes_sha", "train_images",
                           "val_images")
               if before.get(k) is not None and now.get(k) is not None
               and before[k] != now[k]]
    if changed:
        what = "; ".join(f"{k} {before[k]} -> {now[k]}" for k in changed)
        raise SrvError(f"{run.path} was trained on another data set ({what}): point --data at "
                       f"the run's data, or start a separate run with --name (or --restart)")


def _mark_failed(run: RunDir, info: DistInfo, reason: str) -> None:
    if info.is_main and run.path.exists():
        status = run.status() or {}
        run.write_status("failed", status.get("epoch", 0), status.get("step", 0), reason)


# --- loading trained weights -----------------------------------------------------------------


def load_checkpoint_model(path: Path | str, weights: str = "last",
                          device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any],
                                                                     dict[str, Any]]:
    """Rebuild a model from a run directory or a ``.pt`` file.

    Args:
        path: a run directory (``weights`` picks ``best.pt`` / ``last.pt`` / the EMA of
            ``last.pt``) or a checkpoint file.
        weights: ``best``, ``last`` or ``ema``.

    Returns:
        ``(model in eval mode, config dict, info)`` where info says which weights were loaded.

    Raises:
        SrvError: one line naming the file, for anything that is not a usable srv checkpoint
            (missing, truncated, another kind of file, weights that do not fit its config).
    """
    from reproduce.training.checkpoints import read_checkpoint, summarize

    path = Path(path)
    if path.is_dir():
        name = "best.pt" if weights == "best" else "last.pt"
        ckpt_path = path / name
    else:
        ckpt_path = path
    if not ckpt_path.exists():
        raise SrvError(f"no checkpoint at {ckpt_path}: give a run directory that has trained "
                       f"at least one epoch, or a .pt file")
    ckpt = read_checkpoint(ckpt_path, map_location=device)
    cfg = ckpt["config"]
    state = ckpt["model"]
    if weights == "ema":
        if not ckpt.get("ema"):
            raise SrvError(f"{ckpt_path} has no EMA weights: the run had ema_decay = 0; use "
                           f"--weights best or last")
        state = ckpt["ema"]
    try:
        model = build_model(cfg, state["head.weight"].shape[0])
        model.load_state_dict(state)
    except SrvError:
        raise
    except Exception as err:  # a config or weights this version of srv cannot rebuild
        raise SrvError(f"{ckpt_path}: its weights do not fit the model its config describes "
                       f"({summarize(err)}); was it written by another srv version or "
                       f"edited?") from None
    model.to(device).eval()
    return model, cfg, {"checkpoint": str(ckpt_path), "weights": weights,
                        "epoch": ckpt.get("epoch")}

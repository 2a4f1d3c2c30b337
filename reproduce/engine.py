"""The training and evaluation engine: timm components in a loop that never silently goes wrong.

* Optimizer from ``timm.optim.create_optimizer_v2`` with the recipe source's weight-decay
  exemptions (:mod:`.optim`), timm's cosine schedule stepped as DeiT / pycls step it
  (:mod:`.schedule`), label smoothing / soft-target loss, timm ``Mixup``, drop path, repeated
  augmentation under DDP, the EMA as DeiT or pycls keep it (:mod:`.ema`, timm ``ModelEmaV3``),
  AMP, clipping, SAM. The refusals are :func:`.runnable.refuse`, shared with ``--dry-run``.
* Every run is a directory (:mod:`reproduce.runs`); rerunning the same command resumes from
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Sampler

from . import sam
from .config import RunConfig, config_diff
from .data import Datasets, build_datasets
from .distributed import DistInfo, all_reduce_sum, broadcast_flag, cleanup, init_distributed
from .ema import build_ema
from .errors import SrvError
from .optim import build_optimizer
from .progress import Reporter
from .recipes import Recipe
from .runnable import build_mixup_loss, refuse
from .runs import RunDir, atomic_torch_save, atomic_write_json, environment, git_state
from .schedule import LrSchedule

__all__ = ["RunOutcome", "train", "evaluate", "val_loader", "build_model", "load_checkpoint_model",
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


def build_model(cfg: RunConfig | dict[str, Any], num_classes: int) -> nn.Module:
    """The run's model: catalogue entry + recipe (image size, stride, stem, drop path)."""
    from .models import create

    if isinstance(cfg, dict):
        cfg = RunConfig.from_dict(cfg)
    r = cfg.recipe
    kwargs: dict[str, Any] = dict(num_classes=num_classes, img_size=r.img_size,
                                  drop_path_rate=r.drop_path, drop_rate=r.drop)
    if r.stride:
        kwargs["patch_size"] = r.stride
    if r.stem:
        kwargs["stem"] = r.stem
    if r.stem_width:
        kwargs["stem_width"] = r.stem_width
    return create(cfg.model, **kwargs)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**31


class _ShardSampler(Sampler[int]):
    """Indices ``rank, rank + world, ...``: every item on exactly one rank, no padding."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _train_loader(data: Datasets, r: Recipe, info: DistInfo) -> tuple[DataLoader, Any]:
    from torch.utils.data import DistributedSampler

    per_device = r.batch_size // info.world_size
    if len(data.train) < r.batch_size:  # type: ignore[arg-type]
        raise SrvError(f"the training set has {len(data.train)} images, fewer than one global "
                       f"batch of {r.batch_size}: lower --batch-size")
    if r.aug_repeats and info.distributed:
        from timm.data.distributed_sampler import RepeatAugSampler

        sampler: Any = RepeatAugSampler(data.train, num_replicas=info.world_size,
                                        rank=info.rank, num_repeats=r.aug_repeats)
    else:
        sampler = DistributedSampler(data.train, num_replicas=info.world_size, rank=info.rank,
                                     shuffle=True, seed=r.seed)
    loader = DataLoader(data.train, batch_size=per_device, sampler=sampler, drop_last=True,
                        num_workers=r.num_workers, pin_memory=info.device.type == "cuda",
                        persistent_workers=r.num_workers > 0)
    return loader, sampler


def val_loader(data: Datasets, r: Recipe, info: DistInfo) -> DataLoader:
    """Val images sharded over ranks without padding (each image counted exactly once)."""
    return DataLoader(data.val, batch_size=max(r.batch_size // info.world_size, 1),
                      sampler=_ShardSampler(len(data.val), info.rank, info.world_size),  # type: ignore[arg-type]
                      num_workers=r.num_workers, pin_memory=info.device.type == "cuda",
                      persistent_workers=r.num_workers > 0)


def _autocast(r: Recipe, device: torch.device) -> Any:
    if r.amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if r.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


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
def evaluate(model: nn.Module, loader: DataLoader, info: DistInfo, r: Recipe | None = None,
             channels_last: bool = False) -> dict[str, float]:
    """Top-1 / top-5 (%), mean cross-entropy and the number of images, summed over ranks."""
    model.eval()
    correct1 = correct5 = loss_sum = 0.0
    n = 0
    ctx = _autocast(r, info.device) if r is not None else nullcontext()
    for x, y in loader:
        x = x.to(info.device, non_blocking=True)
        y = y.to(info.device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ctx:
            out = model(x)
        out = out.float()
        loss_sum += F.cross_entropy(out, y, reduction="sum").item()
        top = out.topk(min(5, out.shape[1]), dim=1).indices
        hits = top.eq(y[:, None])
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        n += y.numel()
    correct1, correct5, loss_sum, total = all_reduce_sum([correct1, correct5, loss_sum, n], info)
    total = max(total, 1)
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total,
            "loss": loss_sum / total, "n": int(total)}


# --- the loop --------------------------------------------------------------------------------


@dataclass
class _EpochStats:
    loss_sum: float = 0.0
    steps: int = 0
    images: int = 0
    grad_norms: list[float] = field(default_factory=list)
    spikes: int = 0
    max_update_ratio: float = 0.0
    data_time: float = 0.0
    time: float = 0.0
    lr: float = 0.0  # the lr of the epoch's first update


class Trainer:
    """Everything a run holds: model, optimizer, schedule, EMA, data and its directory."""

    def __init__(self, cfg: RunConfig, run: RunDir, info: DistInfo, reporter: Reporter) -> None:
        self.cfg, self.run, self.info, self.reporter = cfg, run, info, reporter
        r = self.r = cfg.recipe
        refuse(cfg, info.world_size)
        _seed_all(r.seed)
        self.data = build_datasets(r)
        if r.aug_repeats and not info.distributed:
            reporter.line(f"note: aug_repeats={r.aug_repeats} acts only under DDP (as in "
                          f"DeiT); this 1-process run samples without repeats")
        self.train_loader, self.sampler = _train_loader(self.data, r, info)
        self.val_loader = val_loader(self.data, r, info)
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
        self.params_m = sum(p.numel() for p in model.parameters()) / 1e6
        self.optimizer = build_optimizer(model, r, self.lr)
        self.sched = LrSchedule(self.optimizer, r, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(info.device.type) if r.amp == "fp16" else None
        self.ema = build_ema(model, r, self.steps_per_epoch)
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
        self.step = 0  # optimizer updates done
        self.best_top1 = -1.0
        self.best_epoch = 0
        self.loss_mean: float | None = None
        self.rows: list[dict[str, Any]] = []  # metrics of finished epochs (same on every rank)

    # checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "epoch": self.epoch,
            "step": self.step,
            "best_top1": self.best_top1,
            "best_epoch": self.best_epoch,
            "loss_mean": self.loss_mean,
            "rng": _rng_state(),
            "config": self.cfg.to_dict(),
        }

    def load(self, path: Path) -> None:
        ckpt = torch.load(path, map_location=self.info.device, weights_only=True)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.sched is not None and ckpt["scheduler"] is not None:
            self.sched.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt["scaler"] is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.best_top1, self.best_epoch = ckpt["best_top1"], ckpt["best_epoch"]
        self.loss_mean = ckpt["loss_mean"]
        _set_rng_state(ckpt["rng"])
        self.rows = [row for row in self.run.metrics() if row["epoch"] <= self.epoch]

    # one epoch
    def _grad_norm(self, params: list[nn.Parameter]) -> torch.Tensor:
        """The global gradient norm (before clipping), as a tensor (no device sync)."""
        if self.r.clip_grad > 0:
            return torch.nn.utils.clip_grad_norm_(params, self.r.clip_grad)
        return torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])

    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with _autocast(self.r, self.info.device):
            out = self.net(x)
            return self.criterion(out.float(), y)

    def _backward(self, loss: torch.Tensor) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def train_epoch(self) -> _EpochStats:
        r, info = self.r, self.info
        epoch = self.epoch + 1
        _seed_all(_epoch_seed(r.seed, epoch, info.rank))
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.sched.begin_epoch(epoch)
        self.net.train()
        params = [p for p in self.model.parameters() if p.requires_grad]
        stats = _EpochStats(lr=self.optimizer.param_groups[0]["lr"])  # the first update's lr
        self.reporter.start_epoch(epoch, r.epochs, self.steps_per_epoch)
        t_epoch = t_last = time.perf_counter()
        for i, (x, y) in enumerate(self.train_loader):
            stats.data_time += time.perf_counter() - t_last
            x = x.to(info.device, non_blocking=True)
            y = y.to(info.device, non_blocking=True)
            if r.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.mixup is not None:
                x, y = self.mixup(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._forward_loss(x, y)
            self._backward(loss)
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            grad_norm = self._grad_norm(params)
            if sam.base_optimizer(r.opt):
                moves = sam.perturb(params, r.sam_rho)
                self.optimizer.zero_grad(set_to_none=True)
                self._backward(self._forward_loss(x, y))
                sam.restore(params, moves)
                if r.clip_grad > 0:
                    torch.nn.utils.clip_grad_norm_(params, r.clip_grad)
            before = [p.detach().clone() for p in params]
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            with torch.no_grad():
                delta = torch._foreach_sub([p.detach() for p in params], before)
                d = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(delta)))
                w = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(before)))
                # one device sync per step for every scalar the loop needs
                loss_value, grad_norm, d, w = torch.stack(
                    [loss.detach().float(), grad_norm.float(), d.float(), w.float()]).tolist()
            # a non-finite step stops the run before anything (EMA, checkpoint) sees its weights
            bad_grad = not math.isfinite(grad_norm) and self.scaler is None
            if broadcast_flag(not math.isfinite(loss_value) or bad_grad, info):
                what = "loss" if not math.isfinite(loss_value) else "gradient norm"
                raise _Diverged(epoch, self.step + 1,
                                f"non-finite {what} at epoch {epoch}, step {self.step + 1} "
                                f"(lr {self.optimizer.param_groups[0]['lr']:.3g})")
            self.step += 1
            self.sched.after_update(self.step)
            if self.ema is not None:
                self.ema.update(self.model, step=self.step)
            # stability signals
            stats.grad_norms.append(grad_norm)
            stats.max_update_ratio = max(stats.max_update_ratio, d / max(w, 1e-12))
            if (self.loss_mean is not None and stats.steps + self.epoch > 0
                    and loss_value > r.spike_factor * self.loss_mean):
                stats.spikes += 1
            self.loss_mean = loss_value if self.loss_mean is None else (
                0.9 * self.loss_mean + 0.1 * loss_value)
            stats.loss_sum += loss_value
            stats.steps += 1
            stats.images += x.shape[0] * info.world_size
            self.reporter.step(i + 1, f"loss {loss_value:.4f} "
                                      f"lr {self.optimizer.param_groups[0]['lr']:.2e}")
            t_last = time.perf_counter()
        self.reporter.end_epoch()
        stats.time = time.perf_counter() - t_epoch
        return stats

    def run_epochs(self) -> dict[str, Any]:
        r, info = self.r, self.info
        t_start = time.perf_counter()
        while self.epoch < r.epochs:
            stats = self.train_epoch()
            lr_now = stats.lr
            val = evaluate(self.net, self.val_loader, info, r, r.channels_last)
            self.epoch += 1
            row: dict[str, Any] = {
                "epoch": self.epoch,
                "step": self.step,
                "lr": lr_now,
                "lr_end": self.optimizer.param_groups[0]["lr"],
                "train_loss": all_reduce_sum([stats.loss_sum / max(stats.steps, 1)], info)[0]
                / info.world_size,
                "grad_norm_mean": float(np.mean(stats.grad_norms)) if stats.grad_norms else 0.0,
                "grad_norm_max": float(np.max(stats.grad_norms)) if stats.grad_norms else 0.0,
                "loss_spikes": stats.spikes,
                "max_update_ratio": stats.max_update_ratio,
                "val_top1": val["top1"],
                "val_top5": val["top5"],
                "val_loss": val["loss"],
                "n_val": val["n"],
                "img_per_s": stats.images / max(stats.time, 1e-9),
                "data_wait_frac": stats.data_time / max(stats.time, 1e-9),
                "time_s": stats.time,
            }
            if self.ema is not None:
                ema_val = evaluate(self.ema.module, self.val_loader, info, r, r.channels_last)
                row["ema_top1"], row["ema_top5"] = ema_val["top1"], ema_val["top5"]
            improved = val["top1"] > self.best_top1
            if improved:
                self.best_top1, self.best_epoch = val["top1"], self.epoch
            if info.is_main:
                # metrics first: a kill before last.pt is written leaves an extra row that a
                # resume drops (rows past the checkpoint's epoch are recomputed)
                self.run.write_metrics([*self.rows, row])
                if improved:
                    atomic_torch_save({"model": self.model.state_dict(),
                                       "ema": self.ema.module.state_dict() if self.ema else None,
                                       "epoch": self.epoch, "top1": val["top1"],
                                       "config": self.cfg.to_dict()}, self.run.best_ckpt)
                atomic_torch_save(self.state(), self.run.last_ckpt)
                self.run.write_status("running", self.epoch, self.step)
            self.rows.append(row)
            self.reporter.line(
                f"epoch {self.epoch}/{r.epochs}  loss {row['train_loss']:.4f}  "
                f"val top-1 {val['top1']:.2f}  top-5 {val['top5']:.2f}  "
                f"lr {lr_now:.2e}  |g| {row['grad_norm_mean']:.2f}  "
                f"{row['img_per_s']:.0f} img/s  data {100 * row['data_wait_frac']:.0f}%")
        rows = self.rows
        last = rows[-1] if rows else {}
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
            "grad_norm_max": max((m["grad_norm_max"] for m in rows), default=None),
            "loss_spikes": sum(m["loss_spikes"] for m in rows),
            "max_update_ratio": max((m["max_update_ratio"] for m in rows), default=None),
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
        diff = config_diff({k: v for k, v in old.items() if k != "derived"}, cfg.to_dict())
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
        trainer = Trainer(cfg, run, info, reporter)
        resumed = run.last_ckpt.exists()
        if resumed:
            trainer.load(run.last_ckpt)
            if info.is_main:
                run.truncate_metrics(trainer.epoch)
        if info.is_main:
            atomic_write_json(run.config_path, {**cfg.to_dict(), "derived": trainer.derived})
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
    """
    path = Path(path)
    if path.is_dir():
        name = "best.pt" if weights == "best" else "last.pt"
        ckpt_path = path / name
    else:
        ckpt_path = path
    if not ckpt_path.exists():
        raise SrvError(f"no checkpoint at {ckpt_path}: give a run directory that has trained "
                       f"at least one epoch, or a .pt file")
    ckpt = torch.load(ckpt_path, map_location=device, weights_only=True)
    cfg = ckpt["config"]
    state = ckpt["model"]
    if weights == "ema":
        if not ckpt.get("ema"):
            raise SrvError(f"{ckpt_path} has no EMA weights: the run had ema_decay = 0; use "
                           f"--weights best or last")
        state = ckpt["ema"]
    num_classes = state["head.weight"].shape[0]
    model = build_model(cfg, num_classes)
    model.load_state_dict(state)
    model.to(device).eval()
    return model, cfg, {"checkpoint": str(ckpt_path), "weights": weights,
                        "epoch": ckpt.get("epoch")}

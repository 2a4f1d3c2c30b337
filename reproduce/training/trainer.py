"""The Trainer: everything a run holds (model, optimizer, schedule, EMA, data, its directory) and
the epoch loop, as DeiT's ``engine.py`` ``train_one_epoch`` / ``evaluate`` and ``main.py``'s
epoch loop lay it out. The step is :class:`reproduce.training.step.TrainStep`, evaluation
:func:`reproduce.training.evaluation.evaluate`, checkpoint reading and RNG states
:mod:`reproduce.training.checkpoints`; :func:`reproduce.training.engine.train` drives it.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reproduce.data.build import build_train_loader, build_val_loader
from reproduce.data.datasets import build_datasets
from reproduce.training.checkpoints import read_checkpoint, rng_state, set_rng_state
from reproduce.training.config import RunConfig
from reproduce.training.evaluation import evaluate
from reproduce.training.runnable import build_mixup_loss, build_model, build_optimization, refuse
from reproduce.training.runs import RunDir, atomic_torch_save, git_state
from reproduce.training.stability import EpochStats, StepWindow
from reproduce.training.start import load_initial
from reproduce.training.step import (
    EpochClock,
    TrainStep,
    check_amp,
    compile_model,
    configure_device,
)
from reproduce.training.tracking import Tracking
from reproduce.utils.distributed import DistInfo, all_reduce_sum, broadcast_from_main
from reproduce.utils.progress import Reporter

__all__ = ["Trainer", "Diverged"]


class Diverged(Exception):
    """A non-finite step (or a collapsed fp16 loss scale): the run ends as ``diverged``."""

    status = "diverged"  # what trackers record (tracking.Tracking.__exit__)

    def __init__(self, epoch: int, step: int, reason: str) -> None:
        super().__init__(reason)
        self.epoch, self.step, self.reason = epoch, step, reason


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**31


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _ddp(model: nn.Module, info: DistInfo) -> nn.Module:
    """``model`` under DDP on this process's device: ``device_ids`` is the device's own index,
    which is not the local rank where a task sees one GPU (SLURM's per-task binding: local
    rank 3 trains on cuda:0, :func:`reproduce.utils.distributed.cuda_index`)."""
    from torch.nn.parallel import DistributedDataParallel

    if info.device.type != "cuda":
        return DistributedDataParallel(model)
    return DistributedDataParallel(model, device_ids=[info.device.index],
                                   output_device=info.device.index)


class Trainer:
    """Everything a run holds: model, optimizer, schedule, EMA, data and its directory."""

    def __init__(self, cfg: RunConfig, run: RunDir, info: DistInfo, reporter: Reporter) -> None:
        self.cfg, self.run, self.info, self.reporter = cfg, run, info, reporter
        r = self.r = cfg.recipe
        refuse(cfg, info.world_size)
        check_amp(r.amp, info.device)
        configure_device(info.device, r.deterministic)
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
        if not (r.sync_bn and info.distributed and info.device.type == "cuda"):  # BN per device
            from reproduce.training.fidelity import bn_batch_warning

            if note := bn_batch_warning(cfg.recipe_name, cfg.model, model,
                                        self.derived["micro_batch"], info.world_size,
                                        r.accum_steps):
                reporter.line(f"warning: {note}")
        model.to(info.device)
        if cfg.start is not None and cfg.start.kind == "initial":  # finetuning (.start)
            load_initial(model, cfg.start)
        if r.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model  # unwrapped: what checkpoints hold
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.params_m = sum(p.numel() for p in model.parameters()) / 1e6
        self.optimizer, self.sched, _, self.ema = build_optimization(
            model, r, self.lr, self.steps_per_epoch, fused=info.device.type == "cuda")
        self.scaler = (torch.amp.GradScaler(info.device.type, init_scale=r.amp_init_scale)
                       if r.amp == "fp16" else None)
        net: nn.Module = _ddp(model, info) if info.distributed else model
        # evaluation runs on the unwrapped model: DDP's forward may broadcast buffers, a
        # collective that a rank with an empty val shard would never join
        self.eval_net: nn.Module = model
        if r.compile:
            net = compile_model(net)
            self.eval_net = torch.compile(model) if info.distributed else net
        self.net = net
        self.mixup, self.criterion = build_mixup_loss(r, self.data.num_classes)
        self.stepper = TrainStep(net, self.params, self.optimizer, self.criterion, r, info,
                                 self.scaler)
        self.epoch = 0  # epochs completed
        self.step = 0  # optimizer updates done (skipped fp16 steps count, as in timm and DeiT)
        self.best_top1 = -1.0
        self.best_epoch = 0
        self.loss_mean: float | None = None
        self.rows: list[dict[str, Any]] = []  # metrics of finished epochs (same on every rank)
        self.bad_files: dict[str, int] = {}  # unreadable images met, path -> times replaced
        self.tracker = Tracking()  # none until engine.train opens the run's (rank 0)

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
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
        }

    def load(self, path: Path, metrics_of: RunDir | None = None) -> None:
        """Take up the training state in ``path`` (this run's ``last.pt``, or another run's
        under ``--resume`` with a changed epoch count: ``metrics_of`` is then that run, whose
        metrics rows up to the checkpoint become this run's first)."""
        # to the CPU: load_state_dict copies to the device, and the RNG states must stay CPU
        # ByteTensors (torch.set_rng_state / torch.cuda.set_rng_state accept nothing else)
        ckpt = read_checkpoint(path, map_location="cpu")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        # the schedule is a function of the config and the update count: a checkpoint of
        # another epoch count holds timm's state for the old total (t_initial), so it is left
        # out and the schedule continues on the new total (timm's --resume with new --epochs)
        if ckpt["scheduler"] is not None and ckpt["config"].get("epochs") == self.r.epochs:
            self.sched.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt["scaler"] is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.epoch, self.step = ckpt["epoch"], ckpt["step"]
        self.best_top1, self.best_epoch = ckpt["best_top1"], ckpt["best_epoch"]
        self.loss_mean = ckpt["loss_mean"]
        self.bad_files = dict(ckpt.get("bad_files") or {})
        set_rng_state(ckpt["rng"])
        self.rows = [row for row in (metrics_of or self.run).metrics()
                     if row["epoch"] <= self.epoch]

    # one step
    def _measure_update(self) -> bool:
        every = self.r.update_ratio_every
        return every > 0 and (self.step + 1) % every == 0

    def train_step(self, x: torch.Tensor, y: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One optimizer step (:class:`~reproduce.training.step.TrainStep`): device tensors
        (loss, grad norm, skipped, update ratio); no host sync on CUDA."""
        return self.stepper(x, y, measure_ratio=self._measure_update())

    # one epoch
    def _flush(self, window: StepWindow, stats: EpochStats, epoch: int,
               clock: EpochClock | None = None) -> None:
        """Read the step window back and account it (and the clock's events, now that the host
        has synced); raise on divergence."""
        records = window.flush(self.info)
        if clock is not None:
            clock.settle()
        for rec in records:
            self.loss_mean = stats.add(rec, self.loss_mean, self.r.spike_factor)
        start = self.step_at_epoch_start
        self.tracker.steps(records, lambda step: self.sched.lr_at(epoch, step - start - 1))
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
        if records:  # the lr the last read-back update ran at, as the trackers log it
            last = records[-1]
            self.reporter.step(last.step - start, f"loss {last.loss:.4f} "
                               f"lr {self.sched.lr_at(epoch, last.step - start - 1):.2e}")

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
        clock = EpochClock(info.device)
        for x, y in self.train_loader:
            clock.batch_ready()
            if self.mixup is not None:
                x, y = self.mixup(x, y)
            loss, grad_norm, skipped, ratio = self.train_step(x, y)
            self.step += 1
            self.reporter.step(self.step - self.step_at_epoch_start)  # the bar: host counter
            window.record(self.step, loss, grad_norm, skipped, ratio)
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

    def _lr_span(self, first: float) -> str:
        """The lr over the epoch just finished, as the bar showed it: ``1.00e-03`` or, when it
        moved during the epoch (per-update schedules), ``1.00e-03->9.61e-04``."""
        last = self.sched.lr_at(self.epoch, max(self.steps_per_epoch - 1, 0))
        a, b = f"{first:.2e}", f"{last:.2e}"
        return a if a == b else f"{a}->{b}"

    def run_epochs(self) -> dict[str, Any]:
        r, info = self.r, self.info
        t_start = time.perf_counter()
        while self.epoch < r.epochs:
            stats = self.train_epoch()
            self._sync_for_eval()
            val = evaluate(self.eval_net, self.val_loader, info, r, r.channels_last)
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
            self.tracker.epoch(row)
            skipped = f"  skipped {stats.skipped_steps}" if self.scaler is not None else ""
            loss_text = f"{row['train_loss']:.4f}" if row["train_loss"] is not None else "n/a"
            grad_text = (f"{row['grad_norm_mean']:.2f}" if row["grad_norm_mean"] is not None
                         else "n/a")
            self.reporter.line(
                f"epoch {self.epoch}/{r.epochs}  loss {loss_text}  "
                f"val top-1 {val['top1']:.2f}  top-5 {val['top5']:.2f}  "
                f"lr {self._lr_span(stats.lr)}  |g| {grad_text}{skipped}  "
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



"""A run's life: build its parts, resume, train its epochs, checkpoint, and return its result.

Laid out as DeiT's ``main.py`` around ``engine.py``: :func:`train` prepares the run directory
(:mod:`.runs`), refuses what cannot run, and records the outcome (completed, diverged, failed);
:class:`Trainer` builds the model, optimizer, schedule, EMA and data (:mod:`.builders`), takes
up a checkpoint (:mod:`.resume`), and per epoch trains (:class:`.loop.EpochLoop`), evaluates
(:func:`.loop.evaluate`), writes the metrics row and the checkpoints, and prints its line.

What resume, divergence and a failing rank mean for a run: docs/training.md ("The engine").
May import: every module of :mod:`reproduce.training` but :mod:`.bench`; data, models, utils.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reproduce.data.build import build_train_loader, build_val_loader
from reproduce.data.datasets import build_datasets
from reproduce.errors import ExitCode, SrvError
from reproduce.training.builders import build_mixup_loss, build_model, build_optimization, refuse
from reproduce.training.config import RunConfig, config_diff
from reproduce.training.device import (
    check_amp,
    compile_model,
    configure_device,
    cublas_workspace,
    device_flags_kept,
)
from reproduce.training.loop import Diverged, EpochLoop, EpochStats, TrainStep, evaluate, seed_all
from reproduce.training.resume import load_initial, load_training_state, resume_point, rng_state
from reproduce.training.runs import (
    RunDir,
    atomic_torch_save,
    atomic_write_json,
    environment,
    git_state,
)
from reproduce.training.tracking import Tracking, open_tracking, require_trackers
from reproduce.utils.distributed import (
    DistInfo,
    all_reduce_sum,
    broadcast_from_main,
    cleanup,
    init_distributed,
)
from reproduce.utils.reporter import Reporter

__all__ = ["RunOutcome", "Trainer", "train"]


@dataclass
class RunOutcome:
    """How a call to :func:`train` ended."""

    status: str  # completed | diverged | failed
    run_dir: Path
    result: dict[str, Any] | None = None
    reason: str | None = None
    is_main: bool = True  # rank 0 (the one that reports)
    retrained: bool = True  # False: the run had already ended (completed / diverged), kept

    @property
    def exit_code(self) -> ExitCode:
        return {"completed": ExitCode.OK, "diverged": ExitCode.DIVERGED}.get(
            self.status, ExitCode.FAILED)


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
    """Everything a run holds: model, optimizer, schedule, EMA, data, its directory and the
    epoch loop; the state its checkpoints save."""

    def __init__(self, cfg: RunConfig, run: RunDir, info: DistInfo, reporter: Reporter) -> None:
        self.cfg, self.run, self.info, self.reporter = cfg, run, info, reporter
        r = self.r = cfg.recipe
        refuse(cfg, info.world_size)
        check_amp(r.amp, info.device)
        configure_device(info.device, r.deterministic)
        seed_all(r.seed)
        self.data = build_datasets(r, train=r.loader != "dali")
        if r.aug_repeats and not info.distributed:
            reporter.line(f"note: aug_repeats={r.aug_repeats} acts only under DDP (as in "
                          f"DeiT); this 1-process run samples without repeats")
        self.train_loader = build_train_loader(self.data.train, r, info)
        self.val_loader = build_val_loader(self.data.val, r, info)
        self.steps_per_epoch = len(self.train_loader)
        self.derived = cfg.derived(info.world_size, self.steps_per_epoch)
        self.lr = self.derived.lr

        model = build_model(cfg, self.data.num_classes)
        if r.sync_bn and info.distributed and info.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        elif r.sync_bn and info.distributed:
            reporter.line("note: sync_bn needs CUDA (torch's SyncBatchNorm); on CPU each rank "
                          "keeps its own BN statistics")
        if not (r.sync_bn and info.distributed and info.device.type == "cuda"):  # BN per device
            from reproduce.training.fidelity.sources import bn_batch_warning

            if note := bn_batch_warning(cfg.recipe_name, cfg.model, model,
                                        self.derived.micro_batch, info.world_size,
                                        r.accum_steps):
                reporter.line(f"warning: {note}")
        model.to(info.device)
        if cfg.start is not None and cfg.start.kind == "initial":  # finetuning (.resume)
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
        step_fn = TrainStep(net, self.params, self.optimizer, self.criterion, r, info,
                            self.scaler)
        # the trackers: none until train() opens the run's (rank 0)
        self.loop = EpochLoop(step_fn, self.train_loader, self.steps_per_epoch, self.mixup,
                              self.sched, self.ema, model, reporter, Tracking())
        self.epoch = 0  # epochs completed
        self.best_top1 = -1.0
        self.best_epoch = 0
        self.rows: list[dict[str, Any]] = []  # metrics of finished epochs (same on every rank)
        self.bad_files: dict[str, int] = {}  # unreadable images met, path -> times replaced

    @property
    def step(self) -> int:
        """Optimizer updates done (the epoch loop counts them)."""
        return self.loop.step

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
            "loss_mean": self.loop.loss_mean,
            "bad_files": dict(self.bad_files),
            "rng": rng_state(),
            "config": self.cfg.to_dict(),
        }

    def load(self, path: Path, metrics_of: RunDir | None = None) -> None:
        """Take up the training state in ``path`` (this run's ``last.pt``, or another run's
        under ``--resume`` with a changed epoch count: ``metrics_of`` is then that run, whose
        metrics rows up to the checkpoint become this run's first)."""
        ckpt = load_training_state(path, self.model, self.optimizer, self.sched, self.scaler,
                                   self.ema, self.r.epochs)
        self.epoch, self.loop.step = ckpt["epoch"], ckpt["step"]
        self.best_top1, self.best_epoch = ckpt["best_top1"], ckpt["best_epoch"]
        self.loop.loss_mean = ckpt["loss_mean"]
        self.bad_files = dict(ckpt.get("bad_files") or {})
        self.rows = [row for row in (metrics_of or self.run).metrics()
                     if row["epoch"] <= self.epoch]

    # one epoch
    def train_epoch(self) -> EpochStats:
        return self.loop.run(self.epoch + 1)

    def _take_bad_files(self) -> int:
        """Unreadable images the loaders met since the last call (this epoch), over all ranks:
        each file is warned about once per run (rank 0); returns the number of distinct files
        met this epoch."""
        local: list[tuple[str, str]] = []  # (path, warning)
        for loader in (self.train_loader, self.val_loader):
            indices, loader.bad_indices = loader.bad_indices, []
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

    def _metrics_row(self, stats: EpochStats, val: dict[str, float]) -> dict[str, Any]:
        """The epoch's row of ``metrics.jsonl`` (the EMA's and bad images' entries added by
        :meth:`run_epochs`)."""
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
        return row

    def _save(self, row: dict[str, Any], improved: bool) -> None:
        """Rank 0: the metrics first (a kill before last.pt is written leaves an extra row that
        a resume drops: rows past the checkpoint's epoch are recomputed), then last.pt, then
        best.pt (so last.pt is never behind best.pt), then the status."""
        self.run.write_metrics([*self.rows, row])
        atomic_torch_save(self.state(), self.run.last_ckpt)
        if improved:
            atomic_torch_save({"model": self.model.state_dict(),
                               "ema": self.ema.module.state_dict() if self.ema else None,
                               "epoch": self.epoch, "top1": row["val_top1"],
                               "config": self.cfg.to_dict()}, self.run.best_ckpt)
        self.run.write_status("running", self.epoch, self.step)

    def _epoch_line(self, row: dict[str, Any], stats: EpochStats) -> str:
        skipped = f"  skipped {stats.skipped_steps}" if self.scaler is not None else ""
        loss_text = f"{row['train_loss']:.4f}" if row["train_loss"] is not None else "n/a"
        grad_text = (f"{row['grad_norm_mean']:.2f}" if row["grad_norm_mean"] is not None
                     else "n/a")
        return (f"epoch {self.epoch}/{self.r.epochs}  loss {loss_text}  "
                f"val top-1 {row['val_top1']:.2f}  top-5 {row['val_top5']:.2f}  "
                f"lr {self._lr_span(stats.lr)}  |g| {grad_text}{skipped}  "
                f"{row['img_per_s']:.0f} img/s  data {100 * row['data_wait_frac']:.0f}%")

    def run_epochs(self) -> dict[str, Any]:
        """Train the remaining epochs (each: train, evaluate, record, checkpoint, report);
        returns the run's result."""
        r, info = self.r, self.info
        t_start = time.perf_counter()
        while self.epoch < r.epochs:
            stats = self.train_epoch()
            self._sync_for_eval()
            val = evaluate(self.eval_net, self.val_loader, info, r, r.channels_last)
            self.epoch += 1
            row = self._metrics_row(stats, val)
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
                self._save(row, improved)
            self.rows.append(row)
            self.loop.tracker.epoch(row)
            self.reporter.line(self._epoch_line(row, stats))
        return self.result(time.perf_counter() - t_start)

    def result(self, wall_time_s: float) -> dict[str, Any]:
        """The run's ``result.json``: the last epoch's figures and the run's peaks and sums."""
        rows, r = self.rows, self.r
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
            "wall_time_s": round(wall_time_s, 2),
            "world_size": self.info.world_size,
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
    input (data, batch, model, a tracker whose library is missing). torch's process-wide device
    flags (deterministic algorithms, cuDNN autotuning, TF32) are as before when it returns.
    """
    require_trackers(cfg.recipe.log)  # before any data
    r = cfg.recipe
    cublas_workspace(r.deterministic and r.device != "cpu")  # before anything touches CUDA
    with device_flags_kept():
        return _train(cfg, runs_root, restart, run_dir, progress)


def _start_line(cfg: RunConfig, trainer: Trainer, resumed: bool) -> str:
    d, r = trainer.derived, cfg.recipe
    return (f"{'resuming' if resumed else 'training'} {cfg.model} ({trainer.params_m:.2f}M "
            f"params) with recipe {cfg.recipe_name} from epoch {trainer.epoch}/{r.epochs} "
            f"in {trainer.run.path}\n  data: {trainer.data.description}; global batch "
            f"{d.global_batch} = {d.world_size} x {d.per_device_batch}"
            + (f" ({r.accum_steps} micro-batches of {d.micro_batch})" if r.accum_steps > 1
               else "")
            + f"; peak lr {trainer.lr:.3g} ({d.lr_rule}); warmup {d.warmup_steps} steps")


def _train(cfg: RunConfig, runs_root: Path | str, restart: bool, run_dir: Path | str | None,
           progress: bool | None) -> RunOutcome:
    info = init_distributed(cfg.recipe.device)
    started = time.time()
    run = RunDir(Path(run_dir) if run_dir else Path(runs_root) / cfg.run_name)
    failed = True  # until an outcome is returned: how cleanup leaves the process group
    try:
        final = _prepare_run_dir(run, cfg, restart, info)
        if final is not None:
            failed = False
            return RunOutcome(final, run.path, run.result(), (run.status() or {}).get("reason"),
                              info.is_main, retrained=False)
        reporter = Reporter(enabled=info.is_main, rich=progress)
        for note in cfg.notes:
            reporter.line(note)
        trainer = Trainer(cfg, run, info, reporter)
        _check_same_data(run, trainer.data.fingerprint)
        point = resume_point(run, cfg)
        source = point is not None and point[1] is not None  # another run's state (--resume)
        if point is not None:
            path, origin = point
            if origin is not None:
                _check_same_data(origin, trainer.data.fingerprint)
            trainer.load(path, metrics_of=origin)
            if origin is None and info.is_main:
                run.truncate_metrics(trainer.epoch)
        if info.is_main:
            atomic_write_json(run.config_path, {**cfg.to_dict(),
                                                "derived": trainer.derived.to_dict(),
                                                "data": trainer.data.fingerprint})
            env = environment(info.device, info.world_size)
            env.update(params_m=trainer.params_m, data=trainer.data.description,
                       eval_transform=trainer.data.eval_transform, resumed_from_epoch=trainer.epoch)
            atomic_write_json(run.path / "env.json", env)
            run.write_status("running", trainer.epoch, trainer.step)
            if source:
                run.write_metrics(trainer.rows)
        reporter.line(_start_line(cfg, trainer, resumed=point is not None))
        try:
            with open_tracking(cfg.recipe.log, run.path, cfg.to_dict(), trainer.step,
                               info.is_main) as trainer.loop.tracker:
                result = trainer.run_epochs()
                trainer.loop.tracker.finish("completed", result)
        except Diverged as d:
            if info.is_main:
                run.write_status("diverged", d.epoch, d.step, d.reason)
            reporter.line(f"diverged: {d.reason}; last good checkpoint kept in {run.path}")
            failed = False
            return RunOutcome("diverged", run.path, None, d.reason, info.is_main)
        if info.is_main:
            atomic_write_json(run.result_path, result)
            run.write_status("completed", trainer.epoch, trainer.step)
        reporter.line(f"done: final val top-1 {result['top1']:.2f}% (best "
                      f"{result['best_top1']:.2f}% at epoch {result['best_epoch']}); "
                      f"results in {run.path}")
        failed = False
        return RunOutcome("completed", run.path, result, is_main=info.is_main)
    except torch.OutOfMemoryError:
        _mark_failed(run, info, "out of memory", started)
        micro = cfg.recipe.batch_size // info.world_size // cfg.recipe.accum_steps
        raise SrvError(f"out of memory with micro-batches of {micro} per device: raise "
                       f"--accum-steps (same global batch and results), or use --set "
                       f"amp=bf16") from None
    except SrvError:
        raise
    except KeyboardInterrupt:  # resumable: rerunning the same command continues it
        _mark_failed(run, info, "interrupted", started, status="interrupted")
        raise
    except Exception as err:
        _mark_failed(run, info, f"{type(err).__name__}: {err}", started)
        raise
    finally:
        cleanup(failed)


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


def _mark_failed(run: RunDir, info: DistInfo, reason: str, started: float,
                 status: str = "failed") -> None:
    """Record ``failed`` (or ``interrupted``) and why in ``status.json``, before this process
    leaves the group.

    Under DDP any rank records its own failure ("rank 1: ..."): rank 0 may never get to it (its
    next collective waits for the failed rank until that one leaves, and under NCCL torchrun /
    srun stop it). The first failure of this attempt is the cause, so a rank that fails after
    another rank recorded one (its collective errored because that rank left) keeps it."""
    if not run.path.exists():
        return
    now = run.status() or {}
    if info.distributed:
        reason = f"rank {info.rank}: {reason}"
        if now.get("status") == "failed" and run.status_path.stat().st_mtime >= started:
            return
    run.write_status(status, now.get("epoch", 0), now.get("step", 0), reason)

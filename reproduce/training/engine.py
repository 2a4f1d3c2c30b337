"""The training and evaluation engine: timm components in a loop that never silently goes wrong.

Laid out as DeiT's ``main.py`` + ``engine.py``: :func:`train` here (the run directory, resume,
the outcome), the :class:`~reproduce.training.trainer.Trainer` and its epoch loop, one step
(:mod:`.step`: AMP, clipping, SAM, the skip), evaluation (:mod:`.evaluation`) and checkpoints
(:mod:`.checkpoints`).

* Optimizer from ``timm.optim.create_optimizer_v2`` with the recipe source's weight-decay
  exemptions (:mod:`.optim`), timm's cosine schedule stepped as DeiT / pycls step it
  (:mod:`.schedule`), label smoothing / soft-target loss, timm ``Mixup``, drop path, repeated
  augmentation under DDP, the EMA as DeiT or pycls keep it (:mod:`.ema`, timm ``ModelEmaV3``),
  AMP, clipping, SAM. The refusals are :func:`.runnable.refuse`, shared with ``--dry-run``.
* Every run is a directory (:mod:`reproduce.training.runs`); rerunning the same command resumes from
  ``last.pt``: every epoch reseeds all RNGs from (seed, epoch, rank), so resuming at an epoch
  boundary replays the same randomness. On the CPU the resumed run ends bitwise where an
  uninterrupted one would; on a GPU only with ``deterministic = true`` (cuDNN autotuning, TF32
  and atomics otherwise make kernels nondeterministic: a resumed GPU run is statistically, not
  bitwise, equal).
* Divergence is a result (Wang et al. study stability): a non-finite loss or gradient on any
  rank stops every rank at the next read-back with status ``diverged`` and leaves the last good
  checkpoint untouched.
* A rank that fails (out of memory, an exception) fails the run on every rank: it records
  ``failed`` with its reason in the run's ``status.json`` and exits. Under gloo it leaves the
  process group and the other ranks' next collective errors out; under NCCL it aborts the group
  (a graceful destroy would wait on the collective the others never join) and its launcher
  stops the others (torchrun; srun with ``--kill-on-bad-exit=1``, which ``--backend slurm``
  passes); failing that, their next collective times out after 10 minutes
  (:data:`reproduce.utils.distributed.TIMEOUT`).
* Stability signals per epoch: gradient norm (mean / max over steps), loss spikes (a step whose
  loss exceeds ``spike_factor`` x the running mean) and the largest update ratio
  ``||w_new - w_old|| / ||w_old||``.
* Evaluation shards the val set without padding and sums counts over ranks, so every image is
  counted exactly once whatever the world size.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reproduce.errors import SrvError
from reproduce.training.checkpoints import load_checkpoint_model
from reproduce.training.config import RunConfig, config_diff
from reproduce.training.evaluation import evaluate, val_loader
from reproduce.training.runs import RunDir, atomic_write_json, environment
from reproduce.training.step import (
    configure_device,
    cublas_workspace,
    device_flags_kept,
    step_unless_skipped,
)
from reproduce.training.tracking import open_tracking, require_trackers
from reproduce.training.trainer import Diverged, Trainer
from reproduce.utils.distributed import DistInfo, cleanup, init_distributed
from reproduce.utils.progress import Reporter

__all__ = ["RunOutcome", "Trainer", "train", "evaluate", "val_loader", "load_checkpoint_model",
           "configure_device", "step_unless_skipped", "EXIT_DIVERGED", "EXIT_FAILED"]

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
    retrained: bool = True  # False: the run had already ended (completed / diverged), kept

    @property
    def exit_code(self) -> int:
        return {"completed": 0, "diverged": EXIT_DIVERGED}.get(self.status, EXIT_FAILED)


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
    input (data, batch, model). torch's process-wide device flags (deterministic algorithms,
    cuDNN autotuning, TF32) are as before when it returns.
    """
    require_trackers(cfg.recipe.log)
    r = cfg.recipe
    cublas_workspace(r.deterministic and r.device != "cpu")  # before anything touches CUDA
    with device_flags_kept():
        return _train(cfg, runs_root, restart, run_dir, progress)


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
        resumed = run.last_ckpt.exists()
        source = cfg.start is not None and cfg.start.kind == "resume" and not resumed
        if resumed:
            trainer.load(run.last_ckpt)
            if info.is_main:
                run.truncate_metrics(trainer.epoch)
        elif source:  # --resume under a changed epoch count: another run's state (.start)
            assert cfg.start is not None
            origin = RunDir(Path(cfg.start.path).parent)
            _check_same_data(origin, trainer.data.fingerprint)
            trainer.load(Path(cfg.start.path), metrics_of=origin)
            resumed = True
        if info.is_main:
            atomic_write_json(run.config_path, {**cfg.to_dict(), "derived": trainer.derived,
                                                "data": trainer.data.fingerprint})
            env = environment(info.device, info.world_size)
            env.update(params_m=trainer.params_m, data=trainer.data.description,
                       eval_transform=trainer.data.eval_transform, resumed_from_epoch=trainer.epoch)
            atomic_write_json(run.path / "env.json", env)
            run.write_status("running", trainer.epoch, trainer.step)
            if source:
                run.write_metrics(trainer.rows)
        reporter.line(
            f"{'resuming' if resumed else 'training'} {cfg.model} ({trainer.params_m:.2f}M params)"
            f" with recipe {cfg.recipe_name} from epoch {trainer.epoch}/{cfg.recipe.epochs} "
            f"in {run.path}\n  data: {trainer.data.description}; global batch "
            f"{trainer.derived['global_batch']} = {info.world_size} x "
            f"{trainer.derived['per_device_batch']}"
            + (f" ({cfg.recipe.accum_steps} micro-batches of {trainer.derived['micro_batch']})"
               if cfg.recipe.accum_steps > 1 else "")
            + f"; peak lr {trainer.lr:.3g} "
            f"({trainer.derived['lr_rule']}); warmup {trainer.derived['warmup_steps']} steps")
        try:
            with open_tracking(cfg.recipe.log, run.path, cfg.to_dict(), trainer.step,
                               info.is_main) as trainer.tracker:
                result = trainer.run_epochs()
                trainer.tracker.finish("completed", result)
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

"""``--dry-run``: what a run would build, cost and hold in memory, checked in seconds.

:func:`dry_run` applies the refusals a launched run would (:func:`.builders.check_runnable`:
the model on the ``meta`` device, optimizer, schedule, EMA, transforms, loss), then describes
the lr schedule, the EMA, the weight decay, the cost (:mod:`.cost`) and a per-device memory
estimate (:mod:`.memory`), and the resolved config. ``srv train --dry-run`` prints its lines.

May import: :mod:`.builders`, :mod:`.config`, :mod:`.cost`, :mod:`.memory`, :mod:`.schedule`,
:mod:`.tracking`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from reproduce.training.builders import Parts, check_runnable
from reproduce.training.config import RunConfig
from reproduce.training.tracking import require_trackers

__all__ = ["describe_ema", "describe_lr", "dry_run", "summary"]


def dry_run(cfg: RunConfig, run_dir: Path | None, runs_dir: Path, img_per_s: str | None,
            folders: list[Path]) -> list[str] | None:
    """The dry run's lines for ``cfg`` at the world size torchrun gives (``WORLD_SIZE``), or
    None on a rank other than 0 (every rank checks, rank 0 speaks). Raises
    :class:`~reproduce.errors.SrvError` for a run that would be refused, and for trackers
    whose library is missing."""
    require_trackers(cfg.recipe.log)  # a missing tracker library stops here, before any data
    world = int(os.environ.get("WORLD_SIZE", "1"))
    parts = check_runnable(cfg, world)  # the refusals a launched run would apply
    if os.environ.get("RANK", "0") != "0":
        return None
    where = run_dir or runs_dir / cfg.run_name
    lines = [f"{cfg.model} with recipe {cfg.recipe_name} ({parts.params_m:.2f}M params, "
             f"world size {world}): {where}",
             "\n".join([*summary(parts), *cfg.notes]),
             cost_line(cfg, parts.steps_per_epoch, world, img_per_s, folders, runs_dir)]
    derived = cfg.derived(world, parts.steps_per_epoch).to_dict()
    from reproduce.training.memory import describe_memory, memory_estimate

    derived["memory_estimate_gib"] = memory_estimate(
        parts.model, parts.optimizer, derived["micro_batch"], cfg.recipe.img_size,
        ema=parts.ema_rule is not None, sam=cfg.recipe.opt.startswith("sam"))
    lines.append(describe_memory(derived["memory_estimate_gib"], cfg.recipe.amp))
    lines.append("config:")
    lines.append(json.dumps({**cfg.to_dict(), "derived": derived, "run_dir": str(where)},
                            indent=2))
    return lines


def cost_line(cfg: RunConfig, steps_per_epoch: int, world: int, img_per_s: str | None,
              folders: list[Path], runs_dir: Path) -> str:
    """The dry run's cost: the training images, then minutes on this machine for a CPU-scale
    run (matching finished runs in ``runs_dir``, else the assumed rate), else GPU-hours and the
    wall-clock time on ``world`` GPUs."""
    from reproduce.training.cost import (
        GpuRates,
        StepTimes,
        cpu_scale,
        format_seconds,
        parse_rates,
        run_cost,
        wall_clock,
    )

    r = cfg.recipe
    if cpu_scale(r):
        rate = StepTimes(runs_dir).per_step(cfg.model, r)
        images = run_cost(r, steps_per_epoch, None).images
        when = ("time: unknown (no finished run of this model and config here)" if rate is None
                else f"time: about {format_seconds(rate.seconds * steps_per_epoch * r.epochs)} "
                     f"on this machine ({rate.source})")
        return f"cost: {images:,} training images; {when}"
    cost = run_cost(r, steps_per_epoch, GpuRates(parse_rates(img_per_s), folders,
                                                 anchor=False)(cfg.model, r))
    return f"cost: {cost.describe()}" + (f"; wall-clock about {wall_clock(cost.gpu_hours, world)}"
                                         if cost.gpu_hours else "")


def describe_lr(parts: Parts) -> list[str]:
    """Lines for ``--dry-run``: the schedule and the lr at a few epochs."""
    from reproduce.training.schedule import glance_epochs

    r = parts.cfg.recipe
    lines = [f"lr schedule: {parts.schedule.describe()}",
             f"  {parts.steps_per_epoch:,} updates per epoch from {parts.steps_source}"]
    for epoch, label in glance_epochs(r):
        lr = parts.schedule.lr_at(epoch)
        lines.append(f"  epoch {epoch:>4}  lr {lr:.4g}" + (f"  ({label})" if label else ""))
    return lines


def describe_ema(parts: Parts) -> str:
    rule = parts.ema_rule
    return "EMA: none" if rule is None else f"EMA: {rule.describe()}"


def summary(parts: Parts) -> list[str]:
    """The dry-run's human lines: lr schedule, EMA, weight decay, transforms, notes."""
    groups = parts.optimizer.param_groups
    decayed = sum(len(g["params"]) for g in groups if g.get("weight_decay", 0) > 0)
    exempt = sum(len(g["params"]) for g in groups if not g.get("weight_decay", 0))
    lines = describe_lr(parts)
    lines.append(describe_ema(parts))
    lines.append(f"optimizer: {type(parts.optimizer).__name__}, weight decay "
                 f"{parts.cfg.recipe.weight_decay:g} on {decayed} tensors, none on {exempt}")
    lines.append(f"eval transform: {parts.eval_desc}")
    lines += [f"note: {n}" for n in parts.notes]
    return lines

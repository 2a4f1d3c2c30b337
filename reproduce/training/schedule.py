"""The learning-rate schedule: timm's scheduler, stepped the way each recipe's source steps it.

timm computes the curve (``timm.scheduler.create_scheduler_v2``: cosine, step or constant, with
linear warmup); this module decides *which point of the curve* each update runs at, and adds the
two pycls rules timm has no switch for:

* ``sched_step = "update"``: every optimizer update moves along the curve (timm ``train.py``
  with ``--sched-on-updates``). Update ``u`` (0-based over the run) runs at ``sched(u)``.
* ``sched_step = "epoch"``: the lr is set once, at the start of each epoch: epoch ``e``
  (1-based) runs at ``sched(e - 1)``. pycls does this (``pycls/core/trainer.py:91-92``,
  ``optim.get_epoch_lr(cur_epoch)`` with a 0-based ``cur_epoch``), and so does timm's
  ``train.py`` (``lr_scheduler.step(epoch + 1)`` after each epoch).
* ``sched_step = "epoch-after"``: DeiT's stepping (facebookresearch/deit ``main.py:432``):
  ``lr_scheduler.step(epoch)`` runs *after* 0-based epoch ``epoch``, so the next epoch runs at
  the value of the one that just ended. Epoch ``e`` (1-based) runs at ``sched(max(e - 2, 0))``:
  the first two epochs sit at ``warmup_lr`` (the scheduler's constructor sets it) and the
  last epoch runs at ``sched(epochs - 2)``.
* ``warmup_factor`` (pycls ``OPTIM.WARMUP_FACTOR``): instead of timm's additive warmup from
  ``warmup_lr``, the whole curve is multiplied by ``f + (1 - f) t / warmup_epochs`` while ``t <
  warmup_epochs`` (``pycls/core/optimizer.py:110-119``), so the warmup starts at ``f`` x lr and
  scales with any lr sweep.
* ``min_lr_factor`` (pycls ``OPTIM.MIN_LR``): the cosine floor is this fraction of the scaled lr
  (``optimizer.py:89-92``: ``(1 - MIN_LR) cos + MIN_LR``, times ``BASE_LR``), not an absolute lr.

:meth:`LrSchedule.lr_at` is pure (``srv train --dry-run``, the fidelity tests);
:meth:`LrSchedule.begin_epoch` and :meth:`LrSchedule.after_update` set the optimizer's lr.
"""

from __future__ import annotations

from typing import Any

import torch

from reproduce.recipes.recipe import Recipe

__all__ = ["LrSchedule", "min_lr", "glance_epochs"]


def min_lr(r: Recipe, lr: float) -> float:
    """The schedule's floor: ``min_lr_factor`` x the scaled lr (pycls) or ``min_lr`` (timm)."""
    return r.min_lr_factor * lr if r.min_lr_factor > 0 else r.min_lr


class LrSchedule:
    """timm's scheduler plus the stepping rules of DeiT and pycls (see the module docstring).

    Args:
        optimizer: its param groups' ``lr`` is the scaled peak lr when this is built.
        r: the recipe (``sched``, ``sched_step``, ``epochs``, warmup and floor keys).
        steps_per_epoch: optimizer updates per epoch (only ``sched_step = "update"`` uses it).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, r: Recipe, steps_per_epoch: int) -> None:
        from timm.scheduler import create_scheduler_v2

        self.optimizer, self.r = optimizer, r
        self.steps_per_epoch = max(int(steps_per_epoch), 1)
        self.peak = [float(g["lr"]) for g in optimizer.param_groups]
        self.min_lr = min_lr(r, self.peak[0])
        per_update = r.sched_step == "update"
        self.timm: Any = None
        if r.sched != "none":
            self.timm, _ = create_scheduler_v2(
                optimizer, sched=r.sched, num_epochs=r.epochs, min_lr=self.min_lr,
                warmup_lr=r.warmup_lr,
                # pycls's warmup is a factor on the curve (applied here), not timm's warmup
                warmup_epochs=0 if r.warmup_factor > 0 else r.warmup_epochs,  # type: ignore[arg-type]
                step_on_epochs=not per_update, updates_per_epoch=self.steps_per_epoch)
        self.begin_epoch(1)

    # --- the curve ------------------------------------------------------------------------------

    def _t(self, epoch: int, update_in_epoch: int = 0) -> int:
        """The scheduler time (timm's ``t``) of an update: in updates or in epochs."""
        if self.r.sched_step == "update":
            return (epoch - 1) * self.steps_per_epoch + update_in_epoch
        if self.r.sched_step == "epoch":
            return epoch - 1
        return max(epoch - 2, 0)  # epoch-after (DeiT)

    def _values(self, t: int) -> list[float]:
        """Per-param-group lr at scheduler time ``t`` (timm's ``_get_lr`` is pure)."""
        values = list(self.peak) if self.timm is None else list(self.timm._get_lr(t))
        factor = self.r.warmup_factor
        if factor > 0:
            t_epochs = t / self.steps_per_epoch if self.r.sched_step == "update" else t
            if t_epochs < self.r.warmup_epochs:
                alpha = t_epochs / self.r.warmup_epochs
                values = [v * (factor * (1.0 - alpha) + alpha) for v in values]
        return values

    def lr_at(self, epoch: int, update_in_epoch: int = 0) -> float:
        """The lr that update ``update_in_epoch`` (0-based) of ``epoch`` (1-based) runs at."""
        return self._values(self._t(epoch, update_in_epoch))[0]

    def _set(self, values: list[float]) -> None:
        for group, value in zip(self.optimizer.param_groups, values, strict=True):
            group["lr"] = value

    # --- the loop's calls -----------------------------------------------------------------------

    def begin_epoch(self, epoch: int) -> None:
        """Set the lr of the first update of ``epoch`` (1-based), whatever the stepping: a resumed
        run gets the same lr as an uninterrupted one."""
        self._set(self._values(self._t(epoch, 0)))

    def after_update(self, num_updates: int) -> None:
        """After ``num_updates`` updates in all: the next update's lr (per-update stepping)."""
        if self.r.sched_step == "update":
            self._set(self._values(num_updates))

    def state_dict(self) -> dict[str, Any]:
        return {"timm": self.timm.state_dict() if self.timm is not None else None,
                "peak": self.peak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.timm is not None and state.get("timm") is not None:
            self.timm.load_state_dict(state["timm"])
        self.peak = list(state.get("peak", self.peak))

    # --- a summary ------------------------------------------------------------------------------

    def describe(self) -> str:
        """One line: the curve and how it is stepped."""
        r = self.r
        start = (f"{r.warmup_factor:g} x lr" if r.warmup_factor > 0 else f"{r.warmup_lr:.3g}")
        floor = (f"{r.min_lr_factor:g} x lr = {self.min_lr:.3g}" if r.min_lr_factor > 0
                 else f"{self.min_lr:.3g}")
        stepping = {"update": "every update",
                    "epoch": "once per epoch, at its start (epoch e at sched(e-1))",
                    "epoch-after": "once per epoch, after it ends (DeiT: epoch e at "
                                   "sched(e-2))"}[r.sched_step]
        if r.sched == "none":
            return f"constant lr {self.peak[0]:.3g}"
        return (f"{r.sched}, peak {self.peak[0]:.3g}, warmup {r.warmup_epochs:g} epochs from "
                f"{start}, floor {floor}; stepped {stepping}")


def glance_epochs(r: Recipe) -> list[tuple[int, str]]:
    """The epochs ``srv train --dry-run`` shows: warmup start, the end of warmup and the first
    epochs after it, the middle and the last (1-based, deduplicated, in order)."""
    w = int(r.warmup_epochs)
    picks = [(1, "warmup start" if r.warmup_epochs > 0 else "first"),
             (2, ""), (w, "last warmup epoch"), (w + 1, "first epoch after warmup"),
             (w + 2, ""), (r.epochs // 2 + 1, "middle"), (r.epochs, "last")]
    out: dict[int, str] = {}
    for epoch, label in picks:
        if 1 <= epoch <= r.epochs and (epoch not in out or label and not out[epoch]):
            out[epoch] = label
    return sorted(out.items())

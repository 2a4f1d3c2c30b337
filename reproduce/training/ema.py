"""The exponential moving average of the weights, as DeiT or pycls keeps it (timm's
``ModelEmaV3`` underneath: parameters and buffers, foreach lerp).

* DeiT (facebookresearch/deit ``engine.py:71-72``, timm 0.3.2 ``ModelEma``): after every
  optimizer update, ``ema = d * ema + (1 - d) * w`` with ``d = ema_decay`` (0.99996).
* pycls (branch ``vitconfigs``, ``pycls/core/net.py:118-131``): only at iterations ``i`` of an
  epoch with ``i % EMA_UPDATE_PERIOD == 0`` (0-based ``i``, period 32), with
  ``alpha = min(1, EMA_ALPHA * BATCH_SIZE / MAX_EPOCH * EMA_UPDATE_PERIOD)`` ("to be fairly
  independent of other parameters") and ``alpha = 1`` (a plain copy) during the warmup epochs.
  With Xiao et al.'s 1e-5, 2048, 400 and 32: alpha = 1.6384e-3 per EMA update, about 0.99995
  per optimizer update.

Recipe keys: ``ema_decay`` (per EMA update, timm's convention) or ``ema_alpha`` (pycls's),
``ema_update_period`` and ``ema_warmup_copy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from reproduce.recipes.recipe import Recipe

__all__ = ["Ema", "EmaRule", "build_ema", "ema_rule"]


@dataclass(frozen=True)
class EmaRule:
    """When and how strongly the EMA moves (everything but the weights)."""

    decay: float  # per EMA update
    period: int  # EMA updates at iterations 0, period, 2 x period, ... of each epoch
    copy_epochs: int  # epochs (0-based < this) during which the EMA copies the weights
    steps_per_epoch: int

    def effective_decay(self) -> float:
        """The decay per *optimizer* update that averages the same: ``decay ** (1 / period)``."""
        return self.decay ** (1.0 / self.period)

    def half_life_updates(self) -> float:
        """Optimizer updates for a weight's contribution to halve."""
        d = self.effective_decay()
        return math.inf if d >= 1 else math.log(0.5) / math.log(d) if d > 0 else 0.0

    def action(self, step: int) -> str:
        """What the EMA does after optimizer update ``step`` (1-based over the run): ``"copy"``,
        ``"update"`` or ``"skip"``."""
        epoch0, it = divmod(step - 1, self.steps_per_epoch)
        if it % self.period:
            return "skip"
        return "copy" if epoch0 < self.copy_epochs else "update"

    def describe(self) -> str:
        text = f"decay {self.decay:.8g} per EMA update"
        if self.period > 1:
            text += (f" every {self.period} updates of an epoch (= {self.effective_decay():.8g} "
                     f"per update)")
        else:
            text += " after every update"
        text += f"; half-life {self.half_life_updates():,.0f} updates"
        if self.copy_epochs:
            text += f"; copies the weights during the first {self.copy_epochs} epochs"
        return text


def ema_rule(r: Recipe, steps_per_epoch: int) -> EmaRule | None:
    """The recipe's EMA rule, or None when it keeps no EMA."""
    if r.ema_alpha > 0:
        # pycls net.py:124-125: alpha scaled by BATCH_SIZE / MAX_EPOCH * UPDATE_PERIOD
        alpha = min(1.0, r.ema_alpha * r.batch_size / r.epochs * r.ema_update_period)
        decay = 1.0 - alpha
    elif r.ema_decay > 0:
        decay = r.ema_decay
    else:
        return None
    # pycls net.py:127: "cur_epoch < WARMUP_EPOCHS" with a 0-based epoch
    copy_epochs = math.ceil(r.warmup_epochs) if r.ema_warmup_copy else 0
    return EmaRule(decay=decay, period=r.ema_update_period, copy_epochs=copy_epochs,
                   steps_per_epoch=max(int(steps_per_epoch), 1))


class Ema:
    """An EMA of a model's state (weights and buffers) following an :class:`EmaRule`."""

    def __init__(self, model: nn.Module, rule: EmaRule) -> None:
        from timm.utils import ModelEmaV3

        self.rule = rule
        self._ema = ModelEmaV3(model, decay=rule.decay)

    @property
    def module(self) -> nn.Module:
        """The averaged model (eval mode): what ``--weights ema`` evaluates."""
        return self._ema.module

    def update(self, model: nn.Module, step: int) -> str:
        """Call after optimizer update ``step`` (1-based over the run); returns the action."""
        action = self.rule.action(step)
        if action == "copy":
            self._ema.set(model)
        elif action == "update":
            self._ema.update(model)  # no step: a constant decay, as DeiT's and pycls's
        return action

    def effective_decay(self) -> float:
        """The decay per optimizer update (see :meth:`EmaRule.effective_decay`)."""
        return self.rule.effective_decay()


def build_ema(model: nn.Module, r: Recipe, steps_per_epoch: int) -> Ema | None:
    """The recipe's EMA of ``model`` (built after the model is on its device, before DDP), or
    None when the recipe keeps none."""
    rule = ema_rule(r, steps_per_epoch)
    return None if rule is None else Ema(model, rule)

"""The optimizer: timm's ``create_optimizer_v2`` with the weight-decay exemptions of the recipe's
source.

* timm / DeiT (timm 0.3.2 ``optim_factory.py:25-37``, used by deit ``main.py:352``): no decay on
  1-D parameters (biases, norm weights) and on the model's ``no_weight_decay()`` names
  (``pos_embed``, ``cls_token``).
* pycls (``vitconfigs`` ``pycls/core/optimizer.py:39-47``): no decay on parameters whose name
  contains ``bn``, ``ln`` or ``bias``; on its ViT those are exactly the 1-D parameters, so the
  position embedding and the class token *are* decayed (recipe key ``wd_pos_cls = true``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from reproduce.errors import SrvError
from reproduce.recipes.recipe import Recipe
from reproduce.training import sam

__all__ = ["build_optimizer", "decay_groups"]

_ADAM_LIKE = ("adamw", "adam", "nadamw", "lamb", "lambw", "radamw")


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """pycls's split: decay every parameter with more than one dimension (so ``pos_embed`` and
    ``cls_token`` too), none on biases and norm weights. timm's own helper, with an empty
    exemption list instead of the model's ``no_weight_decay()``."""
    from timm.optim import param_groups_weight_decay

    return param_groups_weight_decay(model, weight_decay, no_weight_decay_list=())


#: timm optimizer names backed by a torch optimizer with a fused (single-kernel) step
FUSED_OPTIMIZERS = ("adamw", "adam", "sgd", "momentum")
#: ... whose fused step is not safe under fp16's skipped steps: torch's ``_fused_sgd``
#: (torch/optim/sgd.py) allocates the momentum buffers with ``torch.empty_like`` on the first
#: step and hands the kernel ``found_inf``; when GradScaler skips that step (fp16 overflows in
#: its first steps by design) the buffers are left uninitialised and the next step uses them
NOT_FUSED_UNDER_FP16 = ("sgd", "momentum")


def build_optimizer(model: nn.Module, r: Recipe, lr: float,
                    fused: bool = False) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``model`` at the (scaled) ``lr``; SAM's base optimizer for
    ``opt = sam*`` (the SAM steps are the engine's).

    ``fused`` (the engine asks for it on CUDA) picks torch's fused step where the optimizer
    has one: one kernel per step, and it skips a non-finite step on the device. SGD stays on
    the foreach path under fp16 (:data:`NOT_FUSED_UNDER_FP16`)."""
    from timm.optim import create_optimizer_v2

    name = sam.base_optimizer(r.opt) or r.opt
    kwargs: dict[str, Any] = {}
    if name in _ADAM_LIKE:
        kwargs["eps"] = r.opt_eps
    if fused and name in FUSED_OPTIMIZERS and not (
            r.amp == "fp16" and name in NOT_FUSED_UNDER_FP16):
        kwargs["fused"] = True
    if r.wd_pos_cls:
        kwargs["param_group_fn"] = lambda m: decay_groups(m, r.weight_decay)
    try:
        return create_optimizer_v2(model, opt=name, lr=lr, weight_decay=r.weight_decay,
                                   momentum=r.momentum, **kwargs)
    except (ValueError, AssertionError) as err:
        raise SrvError(f"optimizer {r.opt!r}: {err} (timm's names: 'adamw', 'sgd', ...; SAM: "
                       f"'sam' or 'sam-adamw')") from None

"""What a run builds, and whether it can: the model, the optimizer, the loss (with Mixup), the
lr schedule and the EMA, as pycls's ``core/builders.py`` names it, plus the engine's refusals.

The engine builds a run's parts here, ``--dry-run`` (:mod:`.dry_run`) checks them with
:func:`check_runnable` (the model on the ``meta`` device, one forward pass, and the same
refusals a launched run applies), and the fidelity facts (:mod:`.fidelity`) measure what
:func:`build_parts` builds. The optimizer is timm's ``create_optimizer_v2`` with the
weight-decay exemptions of the recipe's source:

* timm / DeiT (timm 0.3.2 ``optim_factory.py:25-37``, used by deit ``main.py:352``): no decay on
  1-D parameters (biases, norm weights) and on the model's ``no_weight_decay()`` names
  (``pos_embed``, ``cls_token``).
* pycls (``vitconfigs`` ``pycls/core/optimizer.py:39-47``): no decay on parameters whose name
  contains ``bn``, ``ln`` or ``bias``; on its ViT those are exactly the 1-D parameters, so the
  position embedding and the class token *are* decayed (recipe key ``wd_pos_cls = true``).

SAM (Foret et al. 2021, arXiv 2010.01412; ``opt = "sam"`` on SGD, ``"sam-adamw"``) builds its
base optimizer here; its two passes are the training step's (:mod:`.loop`).

May import: :mod:`.config`, :mod:`.ema`, :mod:`.schedule`; models, data, recipes, utils.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reproduce.data.datasets import DIGITS_VAL, NO_DATA, SYNTHETIC_CLASSES, synthetic_sizes
from reproduce.errors import SrvError
from reproduce.recipes.recipe import Recipe
from reproduce.training.config import RunConfig, scaled_lr
from reproduce.training.ema import Ema, EmaRule, ema_rule
from reproduce.training.schedule import LrSchedule

__all__ = ["Parts", "base_optimizer", "build_mixup_loss", "build_model", "build_optimization",
           "build_optimizer", "build_parts", "check_data", "check_runnable", "decay_groups",
           "num_classes", "refuse", "steps_per_epoch", "train_size"]

#: training-set sizes srv knows without reading the data
IMAGENET_TRAIN = 1_281_167
KNOWN_TRAIN = {"digits": 1797 - DIGITS_VAL, "fashion-mnist": 60_000, "cifar10": 50_000,
               "cifar100": 50_000}
KNOWN_CLASSES = {"digits": 10, "fashion-mnist": 10, "cifar10": 10, "cifar100": 100,
                 "imagefolder": 1000, "synthetic": SYNTHETIC_CLASSES}


def num_classes(r: Recipe) -> int:
    """Classes of the recipe's data (ImageNet-1k's 1000 for an image folder not given)."""
    return r.num_classes or KNOWN_CLASSES[r.dataset]


@lru_cache(maxsize=8)
def _count_images(train_dir: str) -> int:
    from reproduce.data.datasets import IMG_EXTENSIONS

    n = 0
    for cls in os.scandir(train_dir):
        if cls.is_dir() and not cls.name.startswith("."):
            n += sum(1 for f in os.scandir(cls.path)
                     if os.path.splitext(f.name)[1].lower() in IMG_EXTENSIONS)
    return n


def train_size(r: Recipe) -> tuple[int, str]:
    """``(images, where the number comes from)`` of the recipe's training set."""
    if r.dataset == "synthetic":
        n, src = synthetic_sizes(r)[0], "synthetic"
        return n, src
    if r.dataset == "imagefolder":
        train_dir = Path(r.data_path).expanduser() / "train" if r.data_path else None
        if train_dir is not None and train_dir.is_dir():
            n, src = _count_images(str(train_dir)), f"{train_dir}"
        else:
            n, src = IMAGENET_TRAIN, "ImageNet-1k assumed (no --data given)"
    else:
        n, src = KNOWN_TRAIN[r.dataset], r.dataset
    if r.train_subset and r.train_subset < n:
        return r.train_subset, f"{src}, train_subset"
    return n, src


def steps_per_epoch(r: Recipe, world_size: int = 1) -> tuple[int, str]:
    """Optimizer updates per epoch at ``world_size`` (the lead's sampler decides the samples per
    rank; the loader drops the last partial batch) and where the data size comes from."""
    from reproduce.data.sampling import train_sampler

    n, src = train_size(r)
    per_rank = len(train_sampler(n, r.seed, 0, world_size, r.aug_repeats))
    return per_rank // max(r.batch_size // world_size, 1), f"{n:,} images ({src})"


def build_model(cfg: RunConfig | dict[str, Any], num_classes: int) -> nn.Module:
    """The run's model: catalogue entry + recipe (image size, stride, stem, drop path)."""
    from reproduce.models import create

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


def refuse(cfg: RunConfig, world_size: int = 1) -> None:
    """Every rule under which the engine refuses to start a run (raises :class:`SrvError`)."""
    r = cfg.recipe
    cfg.derived(world_size)  # the global batch must split evenly over the ranks
    per_device = r.batch_size // world_size
    if r.amp == "fp16" and base_optimizer(r.opt):
        raise SrvError("SAM with fp16 loss scaling is not supported: use --set amp=bf16")
    if (r.mixup > 0 or r.cutmix > 0) and per_device % 2:
        raise SrvError(f"Mixup / CutMix need an even per-device batch, got {per_device} "
                       f"(global {r.batch_size} over {world_size}): change --batch-size")


def base_optimizer(opt: str) -> str | None:
    """The base optimizer of a SAM name (``sam`` -> ``sgd``, ``sam-adamw`` -> ``adamw``)."""
    if opt == "sam":
        return "sgd"
    if opt.startswith("sam-"):
        return opt.removeprefix("sam-")
    return None


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

    name = base_optimizer(r.opt) or r.opt
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


def build_mixup_loss(r: Recipe, classes: int) -> tuple[Any, nn.Module]:
    """timm's Mixup (None when off) and the loss that goes with it: soft-target cross-entropy
    with Mixup (label smoothing inside the targets), else label smoothing, else plain CE."""
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    mixup = None
    if r.mixup > 0 or r.cutmix > 0:
        from timm.data import Mixup

        mixup = Mixup(mixup_alpha=r.mixup, cutmix_alpha=r.cutmix, prob=r.mixup_prob,
                      switch_prob=r.mixup_switch_prob, label_smoothing=r.smoothing,
                      num_classes=classes)
    if mixup is not None:
        return mixup, SoftTargetCrossEntropy()
    if r.smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=r.smoothing)
    return None, nn.CrossEntropyLoss()


@dataclass
class Parts:
    """What a run builds before its first step (on a real or a ``meta`` model)."""

    cfg: RunConfig
    world_size: int
    steps_per_epoch: int
    steps_source: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    ema_rule: EmaRule | None
    ema: Ema | None
    train_tf: Any
    eval_tf: Any
    eval_desc: str
    mixup: Any
    criterion: nn.Module
    notes: list[str] = field(default_factory=list)

    @property
    def params_m(self) -> float:
        return sum(p.numel() for p in self.model.parameters()) / 1e6


def build_optimization(model: nn.Module, r: Recipe, lr: float, steps_per_epoch: int, *,
                       fused: bool = False, with_ema: bool = True
                       ) -> tuple[torch.optim.Optimizer, LrSchedule, EmaRule | None, Ema | None]:
    """The optimizer, lr schedule, EMA rule and EMA of a run, as the engine builds them (and
    :func:`build_parts` for the fidelity checks); ``with_ema=False`` makes no EMA copy."""
    optimizer = build_optimizer(model, r, lr, fused=fused)
    rule = ema_rule(r, steps_per_epoch)
    ema = Ema(model, rule) if rule is not None and with_ema else None
    return optimizer, LrSchedule(optimizer, r, steps_per_epoch), rule, ema


def _model_key(cfg: RunConfig, classes: int) -> tuple[Any, ...]:
    r = cfg.recipe
    return (cfg.model, r.img_size, r.stride, r.stem, r.stem_width, r.drop_path, r.drop, classes)


def build_parts(cfg: RunConfig, world_size: int = 1, device: str = "cpu",
                models: dict[tuple[Any, ...], nn.Module] | None = None) -> Parts:
    """Build the run's parts without data: on ``device`` ``"meta"`` the model has shapes only
    (and no EMA module is made: ``ema_rule`` says what it would do)."""
    from reproduce.data.datasets import transforms_for

    r = cfg.recipe
    refuse(cfg, world_size)
    spe, source = steps_per_epoch(r, world_size)
    if spe < 1:
        n, where = train_size(r)
        raise SrvError(f"the training set has {n:,} images ({where}), fewer than one global "
                       f"batch of {r.batch_size}: lower --batch-size")
    classes = num_classes(r)
    key = _model_key(cfg, classes)
    model = models.get(key) if models is not None else None
    if model is None:
        with torch.device(device):
            model = build_model(cfg, classes)
        if device == "meta":  # shapes through the whole network, at no cost
            model.eval()(torch.empty(2, 3, r.img_size, r.img_size, device="meta"))
        if models is not None:
            models[key] = model
    optimizer, schedule, rule, ema = build_optimization(model, r, scaled_lr(r), spe,
                                                        with_ema=device != "meta")
    train_tf, eval_tf, eval_desc = transforms_for(r)
    mixup, criterion = build_mixup_loss(r, classes)
    notes = []
    if r.aug_repeats and world_size == 1:
        notes.append(f"aug_repeats={r.aug_repeats} acts only under DDP (as in DeiT)")
    if r.dataset == "imagefolder" and not r.data_path:
        notes.append("no --data given: ImageNet-1k's size assumed")
    return Parts(cfg, world_size, spe, source, model, optimizer, schedule, rule, ema, train_tf,
                 eval_tf, eval_desc, mixup, criterion, notes)


def check_data(cfg: RunConfig, checked_folders: set[str] | None = None) -> None:
    """The data checks of a run: an image-folder run needs ``data_path`` (the engine refuses to
    start without it) and its layout is checked; a Fashion-MNIST run needs its four IDX files
    (:func:`reproduce.data.fashion.find_files`, nothing read) and a val subset of at least 1,000.
    A folder already in ``checked_folders`` (shared over a grid's cells) is not listed again.
    Raises :class:`SrvError`."""
    r = cfg.recipe
    if r.dataset == "fashion-mnist":
        from reproduce.data.fashion import check_val_subset, data_dir, find_files

        check_val_subset(r.val_subset)
        find_files(data_dir(r.data_path))
        return
    if r.dataset != "imagefolder":
        return
    if not r.data_path:  # the engine's own refusal
        raise SrvError(NO_DATA)
    from reproduce.data.datasets import check_imagefolder

    folder = str(Path(r.data_path).expanduser())
    if checked_folders is None or folder not in checked_folders:
        check_imagefolder(Path(folder))
        if checked_folders is not None:
            checked_folders.add(folder)


def check_runnable(cfg: RunConfig, world_size: int = 1,
                   models: dict[tuple[Any, ...], nn.Module] | None = None,
                   checked_folders: set[str] | None = None) -> Parts:
    """Everything a run would refuse or fail to build, checked without training: the data
    (:func:`check_data`), the engine's refusals, the model (``meta`` device, one forward pass),
    optimizer, schedule, EMA, transforms, Mixup / loss. Raises :class:`SrvError` (or the model's
    own error) with the reason."""
    check_data(cfg, checked_folders)
    return build_parts(cfg, world_size, device="meta", models=models)

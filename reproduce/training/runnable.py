"""Can a run start, and what will it build? Checked in seconds, before anything trains.

The engine's refusals live here (:func:`refuse`), so ``srv train --dry-run`` and ``srv ablate
--dry-run`` apply exactly the rules a launched run would, and :func:`check_runnable` builds what
can be built cheaply: the model on the ``meta`` device (shapes only) with a forward pass, the
optimizer and its weight-decay groups, the lr schedule, the EMA rule, the transforms, Mixup and
the loss. A cell that cannot run fails here with the reason, not hours into a job.

:func:`build_parts` is the same construction on a real (CPU) model: the fidelity facts of
:mod:`reproduce.training.fidelity` measure what it builds.
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
from reproduce.training import sam
from reproduce.training.config import RunConfig, scaled_lr
from reproduce.training.ema import Ema, EmaRule, ema_rule
from reproduce.training.schedule import LrSchedule

__all__ = ["Parts", "build_mixup_loss", "build_parts", "check_data", "check_runnable",
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
    if r.amp == "fp16" and sam.base_optimizer(r.opt):
        raise SrvError("SAM with fp16 loss scaling is not supported: use --set amp=bf16")
    if (r.mixup > 0 or r.cutmix > 0) and per_device % 2:
        raise SrvError(f"Mixup / CutMix need an even per-device batch, got {per_device} "
                       f"(global {r.batch_size} over {world_size}): change --batch-size")


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
    from reproduce.training.optim import build_optimizer

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

"""The vocabulary of the recipe fidelity checks (:mod:`reproduce.training.fidelity.sources`): a
:class:`Fact` (a source's value and how to measure it), a :class:`Difference`, a
:class:`RecipeSource`, and :class:`Built` with the measurements that read srv's built objects
(optimizer param groups, the schedule's lr in the optimizer, the transforms, the EMA on a probe
model, the initialised model), never the TOML text.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from torch import nn

__all__ = ["Fact", "Difference", "RecipeSource", "Built", "SAME", "COMMON_CHOICES"]

SAME: Any = object()  # marker: srv builds the source's value


@dataclass(frozen=True)
class Fact:
    """A value a source defines, and how to measure it on what srv builds."""

    what: str
    value: Any  # the source's value
    source: str  # where the source says so (file:line or config key)
    keys: tuple[str, ...]  # the recipe keys that carry it
    measure: Callable[[Built], Any]
    srv: Any = SAME  # what srv builds instead, when it knowingly differs
    why: str = ""  # why srv differs
    rel: float = 1e-9  # relative tolerance for numbers

    @property
    def differs(self) -> bool:
        return self.srv is not SAME

    @property
    def expected(self) -> Any:
        """What srv must build: the source's value, or the stated known difference."""
        return self.value if self.srv is SAME else self.srv

    def matches(self, measured: Any) -> bool:
        return _close(measured, self.expected, self.rel)


@dataclass(frozen=True)
class Difference:
    """A known difference that no built object shows (the data pipeline, BN statistics)."""

    what: str
    source: str
    srv: str


@dataclass(frozen=True)
class RecipeSource:
    """A recipe and its source: the facts, the known differences, and srv's own choices."""

    recipe: str
    model: str  # the model the facts are measured on
    source: str
    facts: tuple[Fact, ...]
    differences: tuple[Difference, ...] = ()
    choices: dict[str, str] = field(default_factory=dict)  # key -> why srv sets it so

    def keys_covered(self) -> set[str]:
        return {k for f in self.facts for k in f.keys}

    def where(self, key: str) -> str:
        """The source(s) of a key's value, or srv's choice and why."""
        sources = sorted({f.source for f in self.facts if key in f.keys})
        if sources:
            return "; ".join(sources)
        reason = self.choices.get(key) or COMMON_CHOICES.get(key)
        return f"srv's choice: {reason}" if reason else "srv's choice"


def _close(a: Any, b: Any, rel: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=rel, abs_tol=0.0 if b else 1e-12)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# --- what the engine builds ----------------------------------------------------------------------


class Built:
    """The engine's parts for one recipe and model (CPU, real weights), built once."""

    def __init__(self, recipe: str, model: str) -> None:
        self.recipe_name, self.model_name = recipe, model

    @cached_property
    def parts(self) -> Any:
        return self.other()

    @property
    def r(self) -> Any:
        return self.parts.cfg.recipe

    @property
    def model(self) -> nn.Module:
        return self.parts.model

    def other(self, model: str | None = None, **overrides: Any) -> Any:
        """The parts of another model / overrides under the same recipe (a fresh build)."""
        from reproduce.training.builders import build_parts
        from reproduce.training.config import resolve_config

        torch.manual_seed(0)
        return build_parts(resolve_config(model or self.model_name, self.recipe_name, overrides))

    # measurements -------------------------------------------------------------------------------

    def group_wd(self, name: str) -> float:
        """The weight decay of the param group holding parameter ``name``."""
        param = dict(self.model.named_parameters())[name]
        for group in self.parts.optimizer.param_groups:
            if any(p is param for p in group["params"]):
                return float(group["weight_decay"])
        raise KeyError(name)

    def wd_of_1d(self) -> tuple[float, ...]:
        """The distinct weight decays of all 1-D parameters (biases, norm weights)."""
        return tuple(sorted({self.group_wd(n) for n, p in self.model.named_parameters()
                             if p.ndim <= 1}))

    def schedule_epochs(self) -> float:
        """The length of the schedule's curve, in epochs (timm counts updates or epochs)."""
        sched = self.parts.schedule
        per = self.parts.steps_per_epoch if self.r.sched_step == "update" else 1
        return sched.timm.t_initial / per

    def lr_of_epoch(self, epoch: int, update_in_epoch: int = 0) -> float:
        """The lr in the optimizer for an update, after the loop's calls for it."""
        sched, spe = self.parts.schedule, self.parts.steps_per_epoch
        sched.begin_epoch(epoch)
        if update_in_epoch:
            sched.after_update((epoch - 1) * spe + update_in_epoch)
        lrs = {g["lr"] for g in self.parts.optimizer.param_groups}
        if len(lrs) != 1:
            raise AssertionError(f"param groups disagree on the lr: {lrs}")
        return lrs.pop()

    def ema_probe(self, step: int) -> tuple[str, float]:
        """Run the recipe's EMA (as the engine builds it) on a one-weight probe at optimizer
        update ``step`` (1-based): ``(action, weight of the new value)``, so 1 - decay for an
        update, 1 for a copy, 0 for a skip."""
        from reproduce.training.ema import build_ema

        probe = nn.Linear(1, 1, bias=False)
        nn.init.zeros_(probe.weight)
        ema = build_ema(probe, self.r, self.parts.steps_per_epoch)
        if ema is None:
            return "none", 0.0
        with torch.no_grad():
            probe.weight.fill_(1.0)
        action = ema.update(probe, step)
        return action, float(ema.module.weight.item())

    def step_of(self, epoch: int, iteration: int) -> int:
        """The 1-based update count of iteration ``iteration`` (0-based) of ``epoch`` (1-based)."""
        return (epoch - 1) * self.parts.steps_per_epoch + iteration + 1

    def train_steps(self) -> list[Any]:
        return list(self.parts.train_tf.transforms)

    def find(self, kind: str, which: str = "train") -> Any:
        tf = self.parts.train_tf if which == "train" else self.parts.eval_tf
        return next((t for t in tf.transforms if type(t).__name__ == kind), None)

    def std_of(self, name: str) -> float:
        return float(dict(self.model.named_parameters())[name].detach().float().std())

    def absmax_of(self, name: str) -> float:
        return float(dict(self.model.named_parameters())[name].detach().abs().max())


def _interp(x: Any) -> str:
    """A PIL resampling or torchvision interpolation mode as a lower-case name."""
    return str(getattr(x, "name", getattr(x, "value", x))).lower()


def _crop(b: Built) -> tuple[Any, ...]:
    t = b.train_steps()[0]
    return (tuple(t.size), tuple(round(v, 4) for v in t.scale), tuple(round(v, 4) for v in t.ratio),
            _interp(t.interpolation[0] if isinstance(t.interpolation, tuple | list)
                    else t.interpolation))


def _flip(b: Built) -> float:
    t = b.find("RandomHorizontalFlip")
    return 0.0 if t is None else float(t.p)


def _eval(b: Built) -> tuple[Any, ...]:
    resize, crop = b.find("Resize", "eval"), b.find("CenterCrop", "eval")
    return (int(resize.size), _interp(resize.interpolation), tuple(crop.size)[0])


def _normalize(b: Built) -> tuple[tuple[float, ...], tuple[float, ...]]:
    t = b.find("Normalize")
    return (tuple(round(float(v), 4) for v in t.mean), tuple(round(float(v), 4) for v in t.std))


def _rand_augment(b: Built) -> str:
    """The RandAugment in the train transform, written as timm's config string."""
    t = b.find("RandAugment")
    if t is None:
        return "none"
    op = t.ops[0]
    inc = any("Increasing" in o.name for o in t.ops)
    return (f"rand-m{op.magnitude:g}-mstd{op.magnitude_std:g}-inc{int(inc)}-n{t.num_layers}, "
            f"{_interp(op.kwargs['resample'])}")


def _auto_augment_policy(b: Built) -> str:
    """Which of timm's AutoAugment policies the built transform holds (by its ops)."""
    from timm.data.auto_augment import auto_augment_policy

    t = b.find("AutoAugment")
    if t is None:
        return "none"

    def ops(policy: Any) -> list[Any]:
        return [[(o.name, o.prob, o.magnitude) for o in sub] for sub in policy]

    built = ops(t.policy)
    for name in ("v0", "v0r", "original", "originalr", "3a"):
        if ops(auto_augment_policy(name, {})) == built:
            return name
    return "unknown"


def _aa_warp(b: Built) -> tuple[str, tuple[int, ...]]:
    t = b.find("AutoAugment")
    kw = t.policy[0][0].kwargs
    return _interp(kw["resample"]), tuple(kw["fillcolor"])


def _lighting(b: Built) -> tuple[Any, ...]:
    steps = b.train_steps()
    names = [type(t).__name__ for t in steps]
    if "Lighting" not in names:
        return ("none",)
    i = names.index("Lighting")
    t = steps[i]
    return (float(t.std), tuple(round(float(v), 4) for v in t.eigval),
            f"{names[i - 1]} -> Lighting -> {names[i + 1]}")


def _absent(*kinds: str) -> Callable[[Built], tuple[str, ...]]:
    def measure(b: Built) -> tuple[str, ...]:
        return tuple(k for k in kinds if b.find(k) is not None)

    return measure


def _erasing(b: Built) -> tuple[Any, ...]:
    t = b.find("RandomErasing")
    return ("none",) if t is None else (t.probability, t.mode, t.max_count)


def _mixup(b: Built) -> tuple[Any, ...]:
    m = b.parts.mixup
    if m is None:
        return ("none",)
    return (m.mixup_alpha, m.cutmix_alpha, m.mix_prob, m.switch_prob, m.mode, m.label_smoothing)


def _drop_path(b: Built) -> tuple[float, float]:
    def rate(block: nn.Module) -> float:
        return float(getattr(block.drop_path1, "drop_prob", 0.0))

    return rate(b.model.blocks[0]), rate(b.model.blocks[-1])


def _dropout(b: Built) -> float:
    return max((float(m.p) for m in b.model.modules() if isinstance(m, nn.Dropout)), default=0.0)


def _repeats(b: Built) -> tuple[str, int]:
    """The sampler the engine's loader uses under DDP (2 ranks), and its repeats."""
    from reproduce.data.sampling import train_sampler

    s = train_sampler(4096, b.r.seed, 0, 2, b.r.aug_repeats)
    return type(s).__name__, int(getattr(s, "num_repeats", 1))


def _adam(b: Built) -> tuple[str, tuple[float, float], float]:
    g = b.parts.optimizer.param_groups[0]
    return type(b.parts.optimizer).__name__, tuple(g["betas"]), float(g["eps"])


def _ema_every(b: Built, epoch: int, iterations: tuple[int, ...]) -> tuple[str, ...]:
    return tuple(b.ema_probe(b.step_of(epoch, i))[0] for i in iterations)


COMMON_CHOICES = {
    "data_path": "where your data is (--data)",
    "num_classes": "from the data set",
    "train_subset": "all images (a subset is for quick runs)",
    "val_subset": "all images",
    "stem": "the model's own stem",
    "stem_width": "the model's own width",
    "stride": "the model's own stride",
    "momentum": "unused by AdamW",
    "sam_rho": "unused unless opt = sam*",
    "channels_last": "speed only",
    "compile": "speed only",
    "deterministic": "bitwise reproducibility on GPU (no effect on what is computed)",
    "accum_steps": "1: the global batch in one step per update (accumulation keeps the global "
                   "batch on fewer GPUs; BN sees micro-batches)",
    "log": "what is recorded (TensorBoard by default), not what is trained",
    "device": "where the run is",
    "spike_factor": "srv's stability signal (no effect on training)",
    "loader": "timm's DataLoader path (DALI, loader = dali, is srv's GPU option; its "
              "differences are in docs/dali.md)",
    "amp_init_scale": "torch's GradScaler default 2^16, as DeiT's NativeScaler and pycls use",
    "amp_min_scale": "srv's divergence rule under fp16 (DeepSpeed's min_loss_scale 1): a scale "
                     "collapsed below it ends the run as diverged",
    "sync_every": "how often the engine reads statistics back (no effect on training)",
    "update_ratio_every": "how often the update ratio is measured (no effect on training)",
    "recount": "one erasing region",
    "remode": "unused without erasing",
    "color_jitter": "none",
    "seed": "seed 0",
}

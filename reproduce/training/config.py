"""Resolved run configuration: model + recipe + overrides, hashed into the run's identity.

The hash covers everything that changes what a run computes (model, every recipe value) and
nothing that does not: not ``num_workers``, the world size or ``accum_steps`` (the global batch is
what the recipe fixes; how it is split over devices and micro-batches changes only BatchNorm's
batch statistics, as a different world size does), not how often the engine reads statistics
back, and not ``data_path``: a data set copied to node-local disk or mounted elsewhere is the
same data set, so its runs and grid cells stay found. What the data set *is* gets checked
another way: the engine records its fingerprint (class names, image counts) and refuses to
resume a run on data that really changed.

Keys that cannot act on the chosen data set are not hashed silently either: the in-memory data
sets (``digits``, ``fashion-mnist``, ``synthetic``) have no image transform, so RandAugment,
erasing, crops, flips, interpolation and crop_pct do nothing there. Set explicitly (``--set
aa=...`` or a grid axis), such a key is refused; coming from the recipe file (the DeiT recipe on
digits), it is reset to its neutral value with a note. Derived values (per-device batch, the lr
after the scaling rule, warmup in steps) are recorded next to the config, not hashed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from reproduce.errors import SrvError
from reproduce.recipes.recipe import (
    IN_MEMORY_DATASETS,
    PATHLESS_DATASETS,
    Recipe,
    apply_overrides,
    load_recipe,
)

__all__ = ["Derived", "RunConfig", "StartFrom", "resolve_config", "default_recipe", "scaled_lr",
           "config_diff"]

#: recipe keys that do not change the result and so are not part of the run's identity
UNHASHED = frozenset({"num_workers", "device", "sync_every", "update_ratio_every",
                      "data_path", "deterministic", "log", "accum_steps"})

#: recipe keys that act only through the image transform, with their neutral (inactive) values
TRANSFORM_KEYS: dict[str, Any] = {
    "aa": "", "color_jitter": 0.0, "hflip": 0.0, "scale_min": 1.0, "reprob": 0.0,
    "remode": "pixel", "recount": 1, "interpolation": "bilinear", "crop_pct": 0.875,
    "pca_std": 0.0,
}


@dataclass(frozen=True)
class StartFrom:
    """The checkpoint a run starts from (:mod:`reproduce.training.resume`): ``initial`` (its
    weights, a fresh optimizer: ``--initial-checkpoint``) or ``resume`` (its whole training state
    under a changed epoch count: ``--resume``). The content hash is part of the run's identity
    (another file is another run); the path is recorded, not hashed (a moved file is the same
    checkpoint, as with ``data_path``)."""

    kind: str  # initial | resume
    path: str
    sha256: str
    epoch: int  # epochs the checkpoint had trained

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunConfig:
    """A fully resolved run: the model name, the recipe it came from and every value."""

    model: str
    recipe_name: str
    recipe: Recipe
    name: str  # run name prefix (default: the model)
    notes: tuple[str, ...] = ()  # what resolving changed (inert keys reset), for the user
    start: StartFrom | None = None  # the checkpoint the run starts from, if any

    def identity(self) -> dict[str, Any]:
        """What the hash covers: the model, the recipe's name and every hashed value that
        differs from the key's default (so a key added later with a default that keeps the old
        behaviour does not rename every existing run)."""
        defaults = Recipe()
        values = {k: v for k, v in self.recipe.to_dict().items()
                  if k not in UNHASHED and v != getattr(defaults, k)}
        out = {"model": self.model, "recipe": self.recipe_name, **values}
        if self.start is not None:
            out["start"] = {"kind": self.start.kind, "sha256": self.start.sha256}
        return out

    @property
    def hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    @property
    def run_name(self) -> str:
        return f"{self.name}-{self.hash}"

    def to_dict(self) -> dict[str, Any]:
        out = {"model": self.model, "recipe": self.recipe_name, "name": self.name,
               "hash": self.hash, **self.recipe.to_dict()}
        if self.start is not None:
            out["start"] = self.start.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        keys = {f.name for f in dataclasses.fields(Recipe)}
        recipe = Recipe(**{k: v for k, v in data.items() if k in keys})
        start = StartFrom(**data["start"]) if data.get("start") else None
        return cls(model=data["model"], recipe_name=data["recipe"], recipe=recipe,
                   name=data.get("name", data["model"]), start=start)

    def derived(self, world_size: int = 1, steps_per_epoch: int | None = None) -> Derived:
        """Values that follow from the config and the launch: batch split, scaled lr, steps."""
        r = self.recipe
        if r.batch_size % world_size:
            raise SrvError(f"global batch {r.batch_size} is not divisible by the world size "
                           f"{world_size}; pick a multiple of {world_size} (--batch-size)")
        per_device = r.batch_size // world_size
        if per_device % r.accum_steps:
            raise SrvError(f"the per-device batch {per_device} (global {r.batch_size} over "
                           f"{world_size}) is not divisible by accum_steps = {r.accum_steps}: "
                           f"pick --accum-steps dividing {per_device}")
        from reproduce.training.ema import ema_rule
        from reproduce.training.schedule import min_lr

        lr = scaled_lr(r)
        steps: dict[str, Any] = {}
        if steps_per_epoch is not None:
            steps = dict(steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * r.epochs,
                         warmup_steps=int(round(r.warmup_epochs * steps_per_epoch)))
            if (rule := ema_rule(r, steps_per_epoch)) is not None:
                steps.update(ema_decay_per_update=rule.decay, ema_update_period=rule.period,
                             ema_decay_per_step=rule.effective_decay())
        return Derived(
            world_size=world_size,
            global_batch=r.batch_size,
            per_device_batch=per_device,
            accum_steps=r.accum_steps,
            micro_batch=per_device // r.accum_steps,  # what one forward / backward holds
            lr_rule=f"{r.lr_scaling}: lr = base x (global batch / {r.lr_base_batch})"
            + ("^0.5" if r.lr_scaling == "sqrt" else "") if r.lr_scaling != "none"
            else "none: lr = base",
            lr=lr,
            # the values the schedule uses: pycls's relative floor and warmup (xiao recipe) are
            # fractions of the scaled lr, timm's (deit, mini) absolute
            min_lr=min_lr(r, lr),
            warmup_lr=r.warmup_factor * lr if r.warmup_factor > 0 else r.warmup_lr,
            **steps,
        )


@dataclass(frozen=True)
class Derived:
    """What follows from a config and its launch (:meth:`RunConfig.derived`); ``config.json``
    records it as ``derived`` (:meth:`to_dict`). The step counts need the steps per epoch, the
    EMA's values an EMA as well: left out (None) otherwise."""

    world_size: int
    global_batch: int
    per_device_batch: int
    accum_steps: int
    micro_batch: int
    lr_rule: str
    lr: float
    min_lr: float
    warmup_lr: float
    steps_per_epoch: int | None = None
    total_steps: int | None = None
    warmup_steps: int | None = None
    ema_decay_per_update: float | None = None
    ema_update_period: int | None = None
    ema_decay_per_step: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields in order, those not known (None) left out, as ``config.json`` holds them."""
        return {f.name: v for f in dataclasses.fields(self)
                if (v := getattr(self, f.name)) is not None}


def default_recipe(model: str) -> str:
    """The recipe a catalogue model trains with when none is named (``srv train``, ``srv
    analyze``): ``mini`` for ``vit-mini-*``, ``xiao`` for Xiao et al.'s models (``xiao-36gf`` at
    36GF, pycls's lr 7e-4), ``deit`` for the DeiT bodies."""
    from reproduce.models import get_entry

    return get_entry(model).recipe


def scaled_lr(recipe: Recipe) -> float:
    """The lr after the recipe's scaling rule (DeiT: linear, base x global batch / 512)."""
    ratio = recipe.batch_size / recipe.lr_base_batch
    if recipe.lr_scaling == "linear":
        return recipe.lr * ratio
    if recipe.lr_scaling == "sqrt":
        return recipe.lr * math.sqrt(ratio)
    return recipe.lr


def resolve_config(
    model: str,
    recipe: str | None = None,
    overrides: dict[str, Any] | None = None,
    name: str | None = None,
) -> RunConfig:
    """Load ``recipe`` (default: the model's own, :func:`default_recipe`), apply typed
    ``overrides`` and check the model name and stem."""
    from reproduce.models import get_entry

    entry = get_entry(model)
    base, meta = load_recipe(recipe or entry.recipe)
    overrides, fitted = fit_warmup(base, dict(overrides or {}))
    resolved = apply_overrides(base, overrides)
    if resolved.stem:
        from reproduce.models import STEM_KINDS, StemSpec

        if resolved.stem not in STEM_KINDS:
            StemSpec.parse(resolved.stem)  # raises StemSpecError with the fix
    resolved, notes = neutralise_inert_keys(resolved, overrides)
    refuse_unread_data_path(resolved, meta["name"])
    return RunConfig(model=entry.name, recipe_name=meta["name"], recipe=resolved,
                     name=name or entry.name, notes=fitted + notes)


def fit_warmup(base: Recipe, overrides: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A shorter ``epochs`` than the recipe's warmup (``srv train vit-mini-conv --epochs 1``
    against the mini recipe's 5 warmup epochs) scales the warmup to the recipe's share of the
    run, with a note; a warmup given explicitly is left to the recipe's own check."""
    epochs = overrides.get("epochs")
    if (not isinstance(epochs, int) or "warmup_epochs" in overrides
            or base.warmup_epochs <= epochs or base.epochs <= 0):
        return overrides, ()
    warmup = round(base.warmup_epochs * epochs / base.epochs, 2)
    note = (f"note: the recipe's {base.warmup_epochs:g} warmup epochs do not fit in "
            f"{epochs} epoch{'s' if epochs != 1 else ''}: warmup scaled to {warmup:g} (the "
            f"recipe's {base.warmup_epochs:g} of {base.epochs}); --warmup-epochs sets it")
    return {**overrides, "warmup_epochs": warmup}, (note,)


def refuse_unread_data_path(recipe: Recipe, recipe_name: str) -> None:
    """A data folder (``--data``) given to a recipe whose data set is held in memory (digits,
    synthetic) would be recorded and never read: refused, naming the scale that reads it."""
    if not recipe.data_path or recipe.dataset not in PATHLESS_DATASETS:
        return
    from pathlib import Path

    missing = "" if Path(recipe.data_path).expanduser().exists() else " (it does not exist either)"
    raise SrvError(f"--data {recipe.data_path}{missing}: recipe {recipe_name} trains on the "
                   f"{recipe.dataset} data set, held in memory, and would never read it: for an "
                   f"image folder add --preset full (srv ablate) or --dataset imagefolder (srv "
                   f"train)")


def neutralise_inert_keys(recipe: Recipe, overrides: dict[str, Any]
                          ) -> tuple[Recipe, tuple[str, ...]]:
    """Refuse explicitly set keys that cannot act on the recipe's data set; reset those that
    came from the recipe file to their neutral values (returned notes say which)."""
    if recipe.dataset not in IN_MEMORY_DATASETS:
        return recipe, ()
    active = {k: getattr(recipe, k) for k, neutral in TRANSFORM_KEYS.items()
              if getattr(recipe, k) != neutral}
    explicit = sorted(k for k in active if k in overrides)
    if explicit:
        key = explicit[0]
        raise SrvError(f"{key}={active[key]!r} has no effect on the {recipe.dataset} data set "
                       f"(images are tensors in memory, with no image transform): drop that "
                       f"setting, or train on --dataset imagefolder")
    if not active:
        return recipe, ()
    note = (f"note: {', '.join(sorted(active))} act only through an image transform and the "
            f"{recipe.dataset} data set has none (tensors in memory): reset to neutral values")
    return dataclasses.replace(recipe, **{k: TRANSFORM_KEYS[k] for k in active}), (note,)


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two config dicts (``key: old -> new``)."""
    def start_id(value: Any) -> Any:  # a start checkpoint is its content, wherever it lies
        return {k: value.get(k) for k in ("kind", "sha256")} if isinstance(value, dict) else value

    old, new = {**old, "start": start_id(old.get("start"))}, {**new, "start": start_id(
        new.get("start"))}
    keys = sorted(set(old) | set(new))
    skip = {"hash"} | UNHASHED
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys
            if k not in skip and old.get(k) != new.get(k)]

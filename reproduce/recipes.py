"""Training recipes: TOML files in ``recipes/``, validated field by field against :class:`Recipe`.

A recipe file groups keys in TOML tables (``[data]``, ``[optim]``, ...) for readability only: keys
are flat and unique, so a command-line override is just ``--set lr=2e-3`` (``--set optim.lr=2e-3``
works too). An unknown key, a mistyped key or a value of the wrong type is an error that names the
key. The optional ``[recipe]`` table holds metadata (``description``, ``source``).

Key names follow timm's ``train.py`` flags where one exists (``opt``, ``lr``, ``weight_decay``,
``warmup_epochs``, ``min_lr``, ``warmup_lr``, ``smoothing``, ``mixup``, ``cutmix``, ``aa``,
``reprob``, ``drop_path``, ``aug_repeats``), so a recipe can be cross-checked with timm.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .errors import SrvError

__all__ = ["Recipe", "load_recipe", "recipe_dir", "list_recipes", "parse_overrides",
           "apply_overrides", "CHOICES"]

#: allowed values of the string keys that take a fixed set
CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": ("digits", "imagefolder", "synthetic", "cifar10", "cifar100"),
    "lr_scaling": ("linear", "sqrt", "none"),
    "sched": ("cosine", "step", "constant", "none"),
    "sched_step": ("update", "epoch"),
    "amp": ("off", "bf16", "fp16"),
    "remode": ("pixel", "rand", "const"),
    "interpolation": ("bicubic", "bilinear", "nearest"),
    "device": ("auto", "cpu", "cuda"),
    "loader": ("timm", "dali"),
}


@dataclass(frozen=True)
class Recipe:
    """Every knob of a training run, with the defaults of the DeiT recipe where one applies."""

    # data
    dataset: str = "imagefolder"
    data_path: str = ""
    img_size: int = 224
    num_classes: int = 0  # 0: from the data set
    train_subset: int = 0  # 0: all; N: the first N images of a fixed shuffle (quick runs)
    val_subset: int = 0
    num_workers: int = 8
    loader: str = "timm"  # input pipeline: timm's DataLoader (CPU workers) or NVIDIA DALI (GPU)
    interpolation: str = "bicubic"
    crop_pct: float = 0.875  # eval: resize img_size / crop_pct, centre crop img_size
    # augmentation (timm)
    aa: str = ""  # e.g. "rand-m9-mstd0.5-inc1" (RandAugment, DeiT)
    color_jitter: float = 0.0
    hflip: float = 0.5
    scale_min: float = 0.08  # RandomResizedCrop scale lower bound; 1.0 = no crop
    reprob: float = 0.0
    remode: str = "pixel"
    recount: int = 1
    mixup: float = 0.0
    cutmix: float = 0.0
    mixup_prob: float = 1.0
    mixup_switch_prob: float = 0.5
    smoothing: float = 0.1
    aug_repeats: int = 0  # repeated augmentation (DeiT: 3), only under DDP
    # model
    drop_path: float = 0.1
    drop: float = 0.0
    stem: str = ""  # override the model's stem: a kind ("conv-nobn") or a spec string
    stem_width: int = 0  # conv-stem hidden width; 0: the model's default
    stride: int = 0  # total stride of the stem (patch size); 0: the model's own
    # optimisation
    opt: str = "adamw"
    lr: float = 5e-4  # base lr at lr_base_batch; the run uses the scaled value
    lr_base_batch: int = 512
    lr_scaling: str = "linear"
    weight_decay: float = 0.05
    opt_eps: float = 1e-8
    momentum: float = 0.9
    sam_rho: float = 0.05  # only for opt = "sam" / "sam-sgd"
    clip_grad: float = 0.0  # 0: no clipping (the grad norm is still measured)
    # schedule
    epochs: int = 300
    sched: str = "cosine"
    sched_step: str = "update"  # "epoch" is DeiT's own behaviour
    warmup_epochs: float = 5.0
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    # run
    batch_size: int = 1024  # global batch (all devices)
    seed: int = 0
    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    ema_decay: float = 0.0  # 0: no EMA
    device: str = "auto"
    spike_factor: float = 2.0  # a step whose loss exceeds this x the running mean is a spike
    amp_init_scale: float = 65536.0  # fp16: GradScaler's initial loss scale (torch's default)
    amp_min_scale: float = 1.0  # fp16: the run diverged once the loss scale falls below this
    # engine (not part of a run's identity: they change how often the host looks, not the result)
    sync_every: int = 50  # read the step statistics back from the device every N steps
    update_ratio_every: int = 1  # measure ||dw|| / ||w|| every N updates (0: never)

    def __post_init__(self) -> None:
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise SrvError(f"recipe key {key!r} = {value!r}: must be one of "
                               f"{', '.join(allowed)}")
        positive = ("img_size", "batch_size", "epochs", "lr_base_batch", "recount", "sync_every")
        for key in positive:
            if getattr(self, key) < 1:
                raise SrvError(f"recipe key {key!r} must be >= 1, got {getattr(self, key)}")
        non_negative = ("lr", "weight_decay", "warmup_epochs", "warmup_lr", "min_lr", "drop_path",
                        "drop", "smoothing", "mixup", "cutmix", "reprob", "clip_grad",
                        "ema_decay", "train_subset", "val_subset", "num_workers", "aug_repeats",
                        "num_classes", "stem_width", "stride", "update_ratio_every",
                        "amp_min_scale")
        for key in non_negative:
            if getattr(self, key) < 0:
                raise SrvError(f"recipe key {key!r} must be >= 0, got {getattr(self, key)}")
        if not 0 < self.crop_pct <= 1:
            raise SrvError(f"recipe key 'crop_pct' must be in (0, 1], got {self.crop_pct}")
        if self.amp_init_scale <= 0:
            raise SrvError(f"recipe key 'amp_init_scale' must be > 0, got {self.amp_init_scale}")
        if self.warmup_epochs > self.epochs:
            raise SrvError(f"warmup_epochs ({self.warmup_epochs}) exceeds epochs "
                           f"({self.epochs}); lower --warmup-epochs")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in fields(Recipe)}
_META_TABLE = "recipe"


def _type_name(t: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}[t]


def _field_type(key: str) -> type:
    return {"int": int, "float": float, "bool": bool, "str": str}[str(_FIELDS[key].type)]


def _check_key(key: str, where: str) -> None:
    if key not in _FIELDS:
        close = difflib.get_close_matches(key, list(_FIELDS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "; see 'srv recipes --keys'"
        raise SrvError(f"unknown recipe key {key!r} in {where}{hint}")


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check a TOML value's type against the schema (ints are accepted for floats)."""
    want = _field_type(key)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is not bool and isinstance(value, bool) or not isinstance(value, want):
        raise SrvError(f"recipe key {key!r} in {where} must be {_type_name(want)}, "
                       f"got {value!r}")
    return value


def _parse_text(key: str, text: str) -> Any:
    """Parse a command-line value (``--set key=value``) by the key's type."""
    want = _field_type(key)
    try:
        if want is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(text)
        if want is int:
            return int(text)
        if want is float:
            return float(text)
        return text
    except ValueError:
        raise SrvError(f"--set {key}={text}: {key} must be {_type_name(want)}") from None


def recipe_dir() -> Path:
    """Where named recipes live: ``$SRV_RECIPES``, else the shipped ``recipes/`` (the
    checkout's, or the installed package's: :func:`reproduce.resources.resource_dir`)."""
    env = os.environ.get("SRV_RECIPES")
    if env:
        return Path(env).expanduser()
    from .resources import resource_dir

    return resource_dir("recipes")


def list_recipes() -> list[str]:
    return sorted(p.stem for p in recipe_dir().glob("*.toml"))


def _flatten(doc: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    values: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for key, value in doc.items():
        if key == _META_TABLE and isinstance(value, dict):
            meta.update(value)
            continue
        items = value.items() if isinstance(value, dict) else [(key, value)]
        for sub, sub_value in items:
            _check_key(sub, where)
            if sub in values:
                raise SrvError(f"recipe key {sub!r} is set twice in {where}")
            values[sub] = _coerce(sub, sub_value, where)
    return values, meta


def load_recipe(name_or_path: str) -> tuple[Recipe, dict[str, Any]]:
    """Load a named recipe (``mini``) or a TOML path; returns the recipe and its metadata."""
    path = Path(name_or_path)
    if path.suffix != ".toml" or not path.exists():
        path = recipe_dir() / f"{name_or_path}.toml"
    if not path.exists():
        known = ", ".join(list_recipes()) or "none"
        raise SrvError(f"no recipe {name_or_path!r}: give a name ({known}) or a .toml path")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SrvError(f"recipe {path} is not valid TOML: {err}") from None
    values, meta = _flatten(doc, str(path))
    meta.setdefault("name", path.stem)
    return Recipe(**values), meta


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=2e-3", "optim.epochs=5"]`` -> typed dict; bad keys / values raise SrvError."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().rsplit(".", 1)[-1]
        if not sep or not key:
            raise SrvError(f"--set {pair!r}: write key=value, e.g. --set lr=2e-3")
        _check_key(key, "--set")
        out[key] = _parse_text(key, text)
    return out


def apply_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """A copy of ``recipe`` with typed overrides (validated like a recipe file)."""
    checked = {}
    for key, value in overrides.items():
        _check_key(key, "overrides")
        checked[key] = _coerce(key, value, "overrides")
    return dataclasses.replace(recipe, **checked)

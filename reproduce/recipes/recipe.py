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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError

__all__ = ["Recipe", "load_recipe", "recipe_dir", "list_recipes", "parse_overrides",
           "apply_overrides", "key_help", "recipe_keys_set", "CHOICES", "LOG_BACKENDS",
           "IN_MEMORY_DATASETS", "PATHLESS_DATASETS"]

#: allowed values of the string keys that take a fixed set
CHOICES: dict[str, tuple[str, ...]] = {
    "dataset": ("digits", "fashion-mnist", "imagefolder", "synthetic", "cifar10", "cifar100"),
    "lr_scaling": ("linear", "sqrt", "none"),
    "sched": ("cosine", "step", "constant", "none"),
    "sched_step": ("update", "epoch", "epoch-after"),
    "amp": ("off", "bf16", "fp16"),
    "remode": ("pixel", "rand", "const"),
    "interpolation": ("bicubic", "bilinear", "nearest"),
    "device": ("auto", "cpu", "cuda"),
    "loader": ("timm", "dali"),
}
#: data sets held as tensors in memory: no image transform (no augmentation), no per-sample seeds
IN_MEMORY_DATASETS = ("digits", "fashion-mnist", "synthetic")
#: the in-memory data sets that read no files, so a --data folder would never be read
PATHLESS_DATASETS = ("digits", "synthetic")
#: the trackers the ``log`` key may list (comma-separated); ``none`` alone turns tracking off
LOG_BACKENDS = ("none", "tensorboard", "mlflow", "wandb")


def _key(default: Any, meaning: str) -> Any:
    """A recipe key: its default and the one-line meaning ``srv recipes --keys`` prints."""
    return field(default=default, metadata={"help": meaning})


@dataclass(frozen=True)
class Recipe:
    """Every knob of a training run, with the defaults of the DeiT recipe where one applies."""

    # data
    dataset: str = _key("imagefolder", "data set: digits (embedded), fashion-mnist (IDX "
                        "files), imagefolder (ImageNet layout), synthetic, cifar10, cifar100")
    data_path: str = _key("", "data folder (imagefolder: PATH/{train,val}/<class>/*; "
                          "fashion-mnist: the four IDX files, default Debian's "
                          "/usr/share/datasets/fashion-mnist)")
    img_size: int = _key(224, "input resolution (train crop and eval crop)")
    num_classes: int = _key(0, "classes; 0: from the data set")
    train_subset: int = _key(0, "0: all training images; N: the first N of a fixed shuffle "
                             "(fashion-mnist: class-balanced, N // 10 per class)")
    val_subset: int = _key(0, "0: all val images; N: the first N of a fixed shuffle "
                           "(fashion-mnist: class-balanced, N >= 1,000)")
    num_workers: int = _key(8, "DataLoader worker processes (not part of the run's identity)")
    loader: str = _key("timm", "input pipeline: timm (DataLoader, CPU workers) or dali (NVIDIA "
                       "DALI, decoding and augmentation on the GPU)")
    interpolation: str = _key("bicubic", "resize interpolation of the train crop, the "
                              "augmentation warps and the eval resize")
    crop_pct: float = _key(0.875, "eval: resize to img_size / crop_pct, centre crop img_size")
    # augmentation (timm)
    aa: str = _key("", "timm auto-augment: RandAugment 'rand-m9-mstd0.5-inc1' (DeiT), "
                   "AutoAugment policy 'v0' (pycls) or 'original'; empty: none")
    color_jitter: float = _key(0.0, "colour jitter strength (timm ignores it when aa is set)")
    hflip: float = _key(0.5, "horizontal flip probability")
    scale_min: float = _key(0.08, "RandomResizedCrop area lower bound; 1.0 = no crop")
    pca_std: float = _key(0.0, "AlexNet-style PCA lighting noise std (ImageNet eigenvectors), "
                          "before normalisation (pycls TRAIN.PCA_STD); 0: off")
    reprob: float = _key(0.0, "random erasing probability")
    remode: str = _key("pixel", "random erasing fill: pixel, rand or const")
    recount: int = _key(1, "random erasing regions per image")
    mixup: float = _key(0.0, "mixup alpha; 0: off")
    cutmix: float = _key(0.0, "cutmix alpha; 0: off")
    mixup_prob: float = _key(1.0, "probability of mixing a batch at all")
    mixup_switch_prob: float = _key(0.5, "probability of cutmix instead of mixup when both on")
    smoothing: float = _key(0.1, "label smoothing")
    aug_repeats: int = _key(0, "repeated augmentation count (DeiT: 3); acts only under DDP")
    # model
    drop_path: float = _key(0.1, "stochastic depth rate (linear over the blocks)")
    drop: float = _key(0.0, "dropout rate")
    stem: str = _key("", "replace the model's stem: a kind (conv-nobn) or a spec string")
    stem_width: int = _key(0, "conv-stem hidden width; 0: the model's default")
    stride: int = _key(0, "total stride of the stem (patch size); 0: the model's own")
    # optimisation
    opt: str = _key("adamw", "optimizer: timm's names (adamw, momentum, sgd, ...) or SAM "
                    "(sam, sam-adamw, sam-sgd)")
    lr: float = _key(5e-4, "base lr at lr_base_batch; the run uses the scaled value")
    lr_base_batch: int = _key(512, "global batch at which lr is given")
    lr_scaling: str = _key("linear", "lr scaling rule with the global batch: linear, sqrt, "
                           "none")
    weight_decay: float = _key(0.05, "weight decay (none on biases and norm weights)")
    wd_pos_cls: bool = _key(False, "weight decay on pos_embed and cls_token too (pycls); "
                            "false: exempt, as timm's no_weight_decay() (DeiT)")
    opt_eps: float = _key(1e-8, "epsilon of Adam-type optimizers")
    momentum: float = _key(0.9, "momentum of SGD-type optimizers")
    sam_rho: float = _key(0.05, "SAM neighbourhood radius (opt = sam / sam-adamw / sam-sgd)")
    clip_grad: float = _key(0.0, "gradient-norm clipping; 0: none (the norm is still logged)")
    # schedule
    epochs: int = _key(300, "training epochs (the schedule spans exactly these)")
    sched: str = _key("cosine", "lr schedule (timm): cosine, step, constant, none")
    sched_step: str = _key("update", "when the lr changes: update (every optimizer update), "
                           "epoch (at each epoch's start: epoch e runs at sched(e-1), pycls), "
                           "epoch-after (stepped after each epoch with its index: epoch e runs "
                           "at sched(e-2), DeiT main.py)")
    warmup_epochs: float = _key(5.0, "linear warmup length in epochs (fractions allowed)")
    warmup_lr: float = _key(1e-6, "absolute lr at the start of warmup (timm / DeiT); "
                            "0 when warmup_factor is used")
    warmup_factor: float = _key(0.0, "relative warmup (pycls WARMUP_FACTOR): the schedule is "
                                "multiplied by a factor rising linearly from this to 1; 0: off")
    min_lr: float = _key(1e-5, "absolute lr floor of the schedule (timm / DeiT); 0 when "
                         "min_lr_factor is used")
    min_lr_factor: float = _key(0.0, "relative lr floor (pycls MIN_LR): min lr = this x the "
                                "scaled lr; 0: use min_lr")
    # run
    batch_size: int = _key(1024, "GLOBAL batch (all devices) = world size x per-device batch "
                           "x accum_steps")
    accum_steps: int = _key(1, "gradient accumulation: each optimizer update sums the gradients "
                            "of this many micro-batches of the per-device batch (timm's "
                            "--grad-accum-steps); same global batch and schedule, BN sees "
                            "micro-batches (not part of the run's identity)")
    seed: int = _key(0, "random seed")
    amp: str = _key("off", "mixed precision: off, bf16, fp16 (with a loss scaler)")
    channels_last: bool = _key(False, "channels-last memory format")
    compile: bool = _key(False, "torch.compile the model")
    deterministic: bool = _key(False, "deterministic kernels (torch.use_deterministic_algorithms, "
                               "no cuDNN autotuning or TF32): bitwise resume on GPU, slower "
                               "(not part of the run's identity)")
    sync_bn: bool = _key(False, "SyncBatchNorm for the stem under DDP (CUDA)")
    ema_decay: float = _key(0.0, "EMA decay per EMA update (timm / DeiT); 0: no EMA unless "
                            "ema_alpha is set")
    ema_alpha: float = _key(0.0, "pycls EMA_ALPHA: decay per EMA update = 1 - ema_alpha x "
                            "batch_size / epochs x ema_update_period; 0: use ema_decay")
    ema_update_period: int = _key(1, "update the EMA every N optimizer updates of an epoch "
                                  "(pycls EMA_UPDATE_PERIOD 32)")
    ema_warmup_copy: bool = _key(False, "during the warmup epochs the EMA copies the weights "
                                 "(pycls)")
    device: str = _key("auto", "auto, cpu or cuda (not part of the run's identity)")
    spike_factor: float = _key(2.0, "a step whose loss exceeds this x the running mean is a "
                               "loss spike")
    amp_init_scale: float = _key(65536.0, "fp16: GradScaler's initial loss scale (torch's "
                                 "default)")
    amp_min_scale: float = _key(1.0, "fp16: the run has diverged once the loss scale falls "
                                "below this (DeepSpeed's min_loss_scale)")
    sync_every: int = _key(50, "read the step statistics back from the device every N steps "
                           "(not part of the run's identity)")
    update_ratio_every: int = _key(1, "measure the update ratio ||dw|| / ||w|| every N updates; "
                                   "0: never (not part of the run's identity)")
    log: str = _key("tensorboard", "trackers, comma-separated: tensorboard (event files in the "
                    "run folder), mlflow, wandb; none: no tracking (not part of the run's "
                    "identity)")

    def __post_init__(self) -> None:
        names = [name.strip() for name in self.log.split(",")]
        if any(n not in LOG_BACKENDS for n in names) or ("none" in names and len(names) > 1):
            raise SrvError(f"recipe key 'log' = {self.log!r}: use none or a comma list of "
                           f"{', '.join(LOG_BACKENDS[1:])} (e.g. --log tensorboard,mlflow)")
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise SrvError(f"recipe key {key!r} = {value!r}: must be one of "
                               f"{', '.join(allowed)}")
        positive = ("img_size", "batch_size", "epochs", "lr_base_batch", "recount",
                    "ema_update_period", "sync_every", "accum_steps")
        for key in positive:
            if getattr(self, key) < 1:
                raise SrvError(f"recipe key {key!r} must be >= 1, got {getattr(self, key)}")
        non_negative = ("lr", "weight_decay", "warmup_epochs", "warmup_lr", "min_lr", "drop_path",
                        "drop", "smoothing", "mixup", "cutmix", "reprob", "clip_grad",
                        "ema_decay", "ema_alpha", "train_subset", "val_subset", "num_workers",
                        "aug_repeats", "num_classes", "stem_width", "stride", "pca_std",
                        "warmup_factor", "min_lr_factor", "update_ratio_every", "amp_min_scale",
                        "seed")
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
        for absolute, relative in (("warmup_lr", "warmup_factor"), ("min_lr", "min_lr_factor"),
                                   ("ema_decay", "ema_alpha")):
            if getattr(self, absolute) > 0 and getattr(self, relative) > 0:
                raise SrvError(f"recipe keys {absolute!r} and {relative!r} are both set: they "
                               f"are two ways to give one value; set the other to 0 (e.g. "
                               f"--set {absolute}=0)")
        for key in ("warmup_factor", "min_lr_factor", "ema_decay"):
            if getattr(self, key) >= 1:
                raise SrvError(f"recipe key {key!r} must be below 1, got {getattr(self, key)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def key_help(key: str) -> str:
    """The one-line meaning of a recipe key."""
    return str(_FIELDS[key].metadata.get("help", ""))


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
    checkout's, or the installed package's: :func:`reproduce.utils.resources.resource_dir`)."""
    env = os.environ.get("SRV_RECIPES")
    if env:
        return Path(env).expanduser()
    from reproduce.utils.resources import resource_dir

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


def _recipe_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix != ".toml" or not path.exists():
        path = recipe_dir() / f"{name_or_path}.toml"
    if not path.exists():
        known = ", ".join(list_recipes()) or "none"
        raise SrvError(f"no recipe {name_or_path!r}: give a name ({known}) or a .toml path")
    return path


def _read_recipe(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict[str, Any],
                                                                   dict[str, Any]]:
    """The values and metadata of a recipe file, after its ``extends`` chain (this file wins)."""
    if path in seen:
        raise SrvError(f"recipe {path} extends itself (through {', '.join(map(str, seen))})")
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SrvError(f"recipe {path} is not valid TOML: {err}") from None
    values, meta = _flatten(doc, str(path))
    base = meta.get("extends")
    if base:
        base_values, base_meta = _read_recipe(_recipe_path(str(base)), (*seen, path))
        values = {**base_values, **values}
        meta = {**base_meta, **meta}
    meta["name"] = path.stem  # never the base's
    return values, meta


def load_recipe(name_or_path: str) -> tuple[Recipe, dict[str, Any]]:
    """Load a named recipe (``mini``) or a TOML path; returns the recipe and its metadata.

    A recipe may start from another one: ``extends = "xiao"`` in its ``[recipe]`` table takes
    every value of ``xiao`` and then its own (the 36GF models' lr, say)."""
    values, meta = _read_recipe(_recipe_path(name_or_path))
    return Recipe(**values), meta


def recipe_keys_set(name_or_path: str) -> set[str]:
    """The keys a recipe file (with its ``extends`` chain) sets; the others are defaults."""
    values, _ = _read_recipe(_recipe_path(name_or_path))
    return set(values)


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

"""timm's RandAugment and AutoAugment policies, per image, in a DALI graph.

The recipe's ``aa`` string is parsed by timm itself (``rand_augment_transform`` /
``auto_augment_transform`` in ``timm/data/auto_augment.py``, with the hparams that timm's
``create_transform`` passes), and the resulting ops are read back, so op set, per-op
probability, magnitude, magnitude noise (``mstd``), its clip (``mmax``) and the increasing
variants (``inc1``) are timm's by construction. Per image, as timm's ``RandAugment.__call__``
and ``AugmentOp.__call__``:

* RandAugment: ``n`` layers, each picks one op uniformly (with replacement across layers),
  applies it with probability ``p``, at magnitude ``m`` plus N(0, mstd) noise clipped to
  [0, mmax or 10], negated with probability 0.5 for the signed ops;
* AutoAugment: one sub-policy picked uniformly, its ops applied in order, each with its own
  probability and magnitude.

Random draws are made once per image before the graph branches (DALI conditionals,
``enable_conditionals=True``), and each op runs only on the images that chose it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nvidia.dali import fn, types
from nvidia.dali.data_node import DataNode

from reproduce.data.dali.ops import LEVEL_DENOM, OPS, OpContext, apply_op
from reproduce.errors import SrvError

__all__ = ["OpSpec", "AugmentPolicy", "parse_policy", "augment"]


@dataclass(frozen=True)
class OpSpec:
    """One timm ``AugmentOp``: name, probability, magnitude and its noise."""

    name: str
    prob: float
    magnitude: float
    magnitude_std: float = 0.0  # inf: uniform in [0, magnitude]
    magnitude_max: float = LEVEL_DENOM


@dataclass(frozen=True)
class AugmentPolicy:
    """``kind`` "rand": ``layers`` draws from ``choices[0]``; "auto": one of ``choices``."""

    kind: str
    choices: tuple[tuple[OpSpec, ...], ...]
    layers: int = 1


def _op_spec(op: Any) -> OpSpec:
    if op.name not in OPS:
        raise SrvError(f"augmentation op {op.name!r} is not on the DALI loader: use "
                       f"--set loader=timm for this aa policy")
    return OpSpec(op.name, float(op.prob), float(op.magnitude),
                  float(op.magnitude_std or 0.0), float(op.magnitude_max or LEVEL_DENOM))


def parse_policy(aa: str, fill: tuple[int, int, int], interpolation: Any,
                 img_size: int) -> AugmentPolicy:
    """Parse a timm ``aa`` string (``rand-m9-mstd0.5-inc1``, ``original``, ``v0``, ...) with
    timm and return its ops; unsupported forms are a one-line error naming the fix."""
    from timm.data.auto_augment import auto_augment_transform, rand_augment_transform

    # the hparams of timm's create_transform (transforms_factory.py, auto_augment branch)
    hparams = {"translate_const": int(img_size * 0.45), "img_mean": fill,
               "interpolation": interpolation}
    if aa.startswith("augmix"):
        raise SrvError(f"aa = {aa!r}: AugMix is not on the DALI loader; use --set loader=timm")
    try:
        if aa.startswith("rand"):
            ra = rand_augment_transform(aa, hparams)
            if ra.choice_weights is not None:
                raise SrvError(f"aa = {aa!r}: weighted RandAugment (t...) is not on the DALI "
                               f"loader; use --set loader=timm")
            ops = tuple(_op_spec(op) for op in ra.ops)
            return AugmentPolicy("rand", (ops,), layers=int(ra.num_layers))
        aut = auto_augment_transform(aa, hparams)
    except (AssertionError, ValueError, KeyError) as err:
        raise SrvError(f"aa = {aa!r} is not a timm augmentation string ({err or 'unknown'}):"
                       f" e.g. rand-m9-mstd0.5-inc1 or original") from None
    return AugmentPolicy("auto", tuple(tuple(_op_spec(op) for op in sub)
                                       for sub in aut.policy))


# --- per-image random draws, made before the graph branches ---------------------------------


@dataclass
class _Draw:
    """One op slot's random numbers per image: apply (uniform), noise, sign."""

    u: DataNode
    z: DataNode
    sign: DataNode


def _draw(noise: str) -> _Draw:
    u = fn.random.uniform(range=[0.0, 1.0])
    z = (fn.random.normal() if noise == "normal"
         else fn.random.uniform(range=[0.0, 1.0]) if noise == "uniform" else u)
    sign = 1.0 - 2.0 * fn.cast(fn.random.coin_flip(probability=0.5), dtype=types.FLOAT)
    return _Draw(u, z, sign)


def _noise_kind(specs: tuple[OpSpec, ...]) -> str:
    stds = {s.magnitude_std for s in specs}
    if stds == {0.0}:
        return "none"
    if stds == {float("inf")}:
        return "uniform"
    if float("inf") in stds:
        raise SrvError("an aa policy mixing uniform and normal magnitude noise is not on the "
                       "DALI loader; use --set loader=timm")
    return "normal"


def _magnitude(spec: OpSpec, draw: _Draw) -> Any:
    """timm's ``AugmentOp.__call__``: noisy magnitude clipped to [0, magnitude_max]."""
    import nvidia.dali.math as dmath

    if spec.magnitude_std == 0.0:
        return max(0.0, min(spec.magnitude, spec.magnitude_max))
    if spec.magnitude_std == float("inf"):
        m = draw.z * spec.magnitude
    else:
        m = spec.magnitude + spec.magnitude_std * draw.z
    return dmath.clamp(m, 0.0, spec.magnitude_max)


def _maybe(x: DataNode, spec: OpSpec, draw: _Draw, ctx: OpContext) -> DataNode:
    """timm applies an op unless ``random() > prob``."""
    if spec.prob <= 0.0:
        return x
    if spec.prob >= 1.0:
        return apply_op(spec.name, x, _magnitude(spec, draw), draw.sign, ctx)
    if draw.u <= spec.prob:
        x = apply_op(spec.name, x, _magnitude(spec, draw), draw.sign, ctx)
    return x


def _sub_policy(subs: tuple[tuple[OpSpec, ...], ...], index: DataNode, lo: int, hi: int,
                x: DataNode, draws: list[_Draw], ctx: OpContext) -> DataNode:
    """Sub-policy ``subs[index]`` (``lo <= index <= hi``), its ops in order, by halving the range
    (DALI splits the batch at each ``if``). RandAugment's choice of one op is a sub-policy of
    one op; AutoAugment's have two."""
    if lo == hi:
        for k, spec in enumerate(subs[lo]):  # (autograph's zip has no strict=)
            x = _maybe(x, spec, draws[k], ctx)
        return x
    mid = (lo + hi) // 2
    if index <= mid:
        x = _sub_policy(subs, index, lo, mid, x, draws, ctx)
    else:
        x = _sub_policy(subs, index, mid + 1, hi, x, draws, ctx)
    return x


def augment(x: DataNode, policy: AugmentPolicy, ctx: OpContext) -> DataNode:
    """Apply ``policy`` to uint8 HWC images (inside a pipeline with conditionals enabled)."""
    if policy.kind == "rand":
        specs = policy.choices[0]
        noise = _noise_kind(specs)
        probs = {s.prob for s in specs}
        for _ in range(policy.layers):
            index = fn.random.uniform(values=list(range(len(specs))), dtype=types.INT32)
            draw = _draw(noise)
            if len(probs) == 1 and 0.0 < specs[0].prob < 1.0:
                # timm's RandAugment: one probability for every op, so decide before choosing
                # (the same draw, and only the images that apply an op enter the op branches)
                always = tuple(dataclasses.replace(s, prob=1.0) for s in specs)
                if draw.u <= specs[0].prob:
                    x = _sub_policy(tuple((s,) for s in always), index, 0, len(specs) - 1, x,
                                    [draw], ctx)
            else:
                x = _sub_policy(tuple((s,) for s in specs), index, 0, len(specs) - 1, x,
                                [draw], ctx)
        return x
    subs = policy.choices
    noise = _noise_kind(tuple(s for sub in subs for s in sub))
    draws = [_draw(noise) for _ in range(max(len(sub) for sub in subs))]
    index = fn.random.uniform(values=list(range(len(subs))), dtype=types.INT32)
    return _sub_policy(subs, index, 0, len(subs) - 1, x, draws, ctx)

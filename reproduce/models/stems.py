"""Stems (token embedders) for Vision Transformers, as timm ``embed_layer`` modules.

One module, :class:`StemEmbed`, builds every stem the paper studies from a :class:`StemSpec`:

* ``patch``: the patchify stem of ViT / DeiT, a single conv with kernel = stride = patch.
* ``conv``: the scaled-ReLU conv-stem of Wang et al. 2022 ("Scaled ReLU Matters for Training
  Vision Transformers", arXiv 2109.03810), as built by VOLO: conv 7x7 s2 -> BN -> ReLU ->
  conv 3x3 s1 -> BN -> ReLU -> conv 3x3 s1 -> BN -> ReLU -> projection conv with
  kernel = stride = patch / 2. "Scaled ReLU" is the BN (per-channel affine scale) + ReLU pair.
* ``xiao``: the conv-stem of Xiao et al. 2021 ("Early Convolutions Help Transformers See Better",
  arXiv 2106.14881): 3x3 stride-2 convs doubling channels, each BN + ReLU, then a 1x1 conv.
* the paper's ablations of the scaled ReLU: conv-stem without BN, without ReLU, without both,
  with LayerNorm instead of BN, and BN + ReLU after the patchify projection.

A spec is a list of conv layers; every layer but the last is ``conv -> norm -> act``, the last one
(the projection to the embedding width) is a plain conv with bias, optionally followed by
``post_norm`` / ``post_act`` (only the ``patch-bnrelu`` ablation uses them). Specs can be written
as strings, e.g. Xiao et al.'s ViT_C-4GF stem::

    3s2c48,3s2c96,3s2c192,3s2c384,1s1;norm=bn;act=relu
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reproduce.errors import UserError

__all__ = ["ConvLayer", "StemSpec", "StemEmbed", "StemSpecError", "stem_spec", "STEM_KINDS",
           "pycls_stem_init"]

NORMS = ("bn", "ln", "none")
ACTS = ("relu", "gelu", "none")
INITS = ("torch", "pycls")


class StemSpecError(UserError, ValueError):
    """A stem specification that cannot be built."""


@dataclass(frozen=True)
class ConvLayer:
    """One conv of a stem: kernel, stride and output channels (``None`` = embedding width)."""

    kernel: int
    stride: int
    channels: int | None = None

    def __str__(self) -> str:
        c = "" if self.channels is None else f"c{self.channels}"
        return f"{self.kernel}s{self.stride}{c}"


@dataclass(frozen=True)
class StemSpec:
    """A stem: conv layers (the last projects to the embedding width) and their norm / act.

    ``norm`` and ``act`` apply after every conv but the last; ``post_norm`` / ``post_act`` after
    the last (the projection). ``bn`` + ``relu`` is the paper's scaled ReLU. ``init`` follows each
    stem's source: ``torch`` (PyTorch's default conv init, as VOLO and timm leave their stems) or
    ``pycls`` (as pycls initialises Xiao et al.'s stems, :func:`pycls_stem_init`).
    """

    layers: tuple[ConvLayer, ...]
    norm: str = "bn"
    act: str = "relu"
    post_norm: str = "none"
    post_act: str = "none"
    init: str = "torch"

    def __post_init__(self) -> None:
        if not self.layers:
            raise StemSpecError("a stem needs at least one conv layer")
        for name, value, allowed in (
            ("norm", self.norm, NORMS),
            ("act", self.act, ACTS),
            ("post_norm", self.post_norm, NORMS),
            ("post_act", self.post_act, ACTS),
            ("init", self.init, INITS),
        ):
            if value not in allowed:
                raise StemSpecError(f"stem {name}={value!r} is not one of {', '.join(allowed)}")
        for layer in self.layers:
            if layer.kernel < 1 or layer.stride < 1:
                raise StemSpecError(f"stem layer {layer} needs kernel >= 1 and stride >= 1")
        if self.layers[-1].channels is not None:
            raise StemSpecError("the last stem layer projects to the embedding width: give no c")

    @property
    def stride(self) -> int:
        """Total stride of the stem (the 'patch size' a token covers)."""
        return math.prod(layer.stride for layer in self.layers)

    def __str__(self) -> str:
        parts = [",".join(str(layer) for layer in self.layers)]
        for key in ("norm", "act", "post_norm", "post_act", "init"):
            default = StemSpec.__dataclass_fields__[key].default
            if getattr(self, key) != default:
                parts.append(f"{key}={getattr(self, key)}")
        return ";".join(parts)

    @classmethod
    def parse(cls, text: str) -> StemSpec:
        """Parse ``"7s2c64,3s1c64,3s1c64,8s8;norm=bn;act=relu"`` (``KsS[cC]`` per layer)."""
        head, *options = [part.strip() for part in text.split(";")]
        layers = []
        for token in head.split(","):
            m = re.fullmatch(r"(\d+)(?:x\1)?s(\d+)(?:c(\d+))?", token.strip())
            if not m:
                raise StemSpecError(
                    f"stem layer {token!r} is not of the form KsS or KsScC (e.g. 3s2c64); "
                    f"full spec example: '3s2c48,3s2c96,1s1;norm=bn;act=relu'"
                )
            k, s, c = m.groups()
            layers.append(ConvLayer(int(k), int(s), int(c) if c else None))
        kwargs: dict[str, str] = {}
        for option in options:
            key, sep, value = option.partition("=")
            if not sep or key.strip() not in ("norm", "act", "post_norm", "post_act", "init"):
                raise StemSpecError(
                    f"stem option {option!r} is not norm=, act=, post_norm=, post_act= or init="
                )
            kwargs[key.strip()] = value.strip()
        return cls(tuple(layers), **kwargs)


# --- the named stems -------------------------------------------------------------------------

#: stem kind -> (one-line description, norm, act, post_norm, post_act, layout)
_KINDS: dict[str, tuple[str, str, str, str, str, str]] = {
    "patch": ("patchify stem (ViT/DeiT): one conv, kernel = stride = patch", "none", "none",
              "none", "none", "patch"),
    "patch-bnrelu": ("patchify stem followed by BN + ReLU (Xiao et al.'s normalisation study)",
                     "none", "none", "bn", "relu", "patch"),
    "conv": ("conv-stem with scaled ReLU (BN + ReLU), Wang et al. / VOLO", "bn", "relu",
             "none", "none", "conv"),
    "conv-nobn": ("conv-stem, ReLU only (no BN)", "none", "relu", "none", "none", "conv"),
    "conv-norelu": ("conv-stem, BN only (no ReLU)", "bn", "none", "none", "none", "conv"),
    "conv-linear": ("conv-stem with neither BN nor ReLU (a linear stem)", "none", "none",
                    "none", "none", "conv"),
    "conv-ln": ("conv-stem with LayerNorm instead of BN, then ReLU", "ln", "relu", "none",
                "none", "conv"),
    "xiao": ("Xiao et al.'s conv-stem: 3x3 stride-2 convs + BN + ReLU, then 1x1", "bn", "relu",
             "none", "none", "xiao"),
}
STEM_KINDS: dict[str, str] = {kind: v[0] for kind, v in _KINDS.items()}


def _log2(stride: int) -> int:
    n = int(round(math.log2(stride))) if stride > 0 else -1
    if n < 1 or 2**n != stride:
        raise StemSpecError(f"total stride {stride} must be a power of two >= 2 for this stem")
    return n


def stem_spec(
    kind: str,
    stride: int,
    embed_dim: int,
    width: int = 64,
    first_kernel: int = 7,
) -> StemSpec:
    """The spec of a named stem at a given total stride.

    Args:
        kind: one of :data:`STEM_KINDS`.
        stride: total stride (16 at 224x224 for the paper; 4 for the 32x32 CPU scale).
        embed_dim: transformer width (output channels of the projection).
        width: hidden width of the conv-stem (VOLO: 64; not known for the paper, so a parameter).
        first_kernel: kernel of the conv-stem's first conv (VOLO: 7).

    The conv-stem keeps its shape at every stride: a stride-2 conv, two stride-1 convs and a
    projection with kernel = stride = total/2. Xiao et al.'s stem has log2(stride) stride-2 3x3
    convs whose channels double up to ``embed_dim`` (24, 48, 96, 192 for width 192), then a 1x1.
    """
    if kind not in _KINDS:
        raise StemSpecError(f"unknown stem {kind!r}; known: {', '.join(_KINDS)}")
    _, norm, act, post_norm, post_act, layout = _KINDS[kind]
    if layout == "patch":
        layers = (ConvLayer(stride, stride),)
    elif layout == "conv":
        _log2(stride)
        half = stride // 2
        layers = (
            ConvLayer(first_kernel, 2, width),
            ConvLayer(3, 1, width),
            ConvLayer(3, 1, width),
            ConvLayer(half, half),
        )
    else:  # xiao
        n = _log2(stride)
        if embed_dim % 2 ** (n - 1):
            raise StemSpecError(f"embed_dim {embed_dim} is not divisible by {2 ** (n - 1)}")
        layers = tuple(ConvLayer(3, 2, embed_dim // 2 ** (n - 1 - i)) for i in range(n))
        layers += (ConvLayer(1, 1),)
    init = "pycls" if layout == "xiao" else "torch"
    return StemSpec(layers, norm=norm, act=act, post_norm=post_norm, post_act=post_act, init=init)


# --- the module ------------------------------------------------------------------------------


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "ln":
        from timm.layers import LayerNorm2d

        return LayerNorm2d(channels, eps=1e-6)
    return nn.Identity()


def _act(kind: str) -> nn.Module:
    return {"relu": nn.ReLU(inplace=True), "gelu": nn.GELU()}.get(kind, nn.Identity())


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    from timm.layers import to_2tuple

    return tuple(to_2tuple(value))  # type: ignore[return-value]


class StemEmbed(nn.Module):
    """A conv stem producing ``(B, N, C)`` tokens; plugs into timm's ``VisionTransformer``.

    Follows the ``embed_layer`` contract of timm: it is called with ``img_size``, ``patch_size``,
    ``in_chans``, ``embed_dim`` (and ``bias``, ``dynamic_img_pad``, ``device``, ``dtype``) and
    exposes ``num_patches``, ``grid_size``, ``feat_ratio()`` and ``dynamic_feat_size()``.
    ``patch_size`` must equal the spec's total stride.
    """

    def __init__(
        self,
        spec: StemSpec,
        img_size: int | tuple[int, int] = 224,
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        bias: bool = True,
        dynamic_img_pad: bool = False,
        device: Any = None,
        dtype: Any = None,
        **_: Any,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.patch_size = _pair(patch_size)
        if self.patch_size != (spec.stride, spec.stride):
            raise StemSpecError(
                f"stem {spec} has total stride {spec.stride} but the model's patch size is "
                f"{self.patch_size[0]}; make them equal"
            )
        self.img_size = _pair(img_size)
        self.grid_size = (self.img_size[0] // spec.stride, self.img_size[1] // spec.stride)
        if min(self.grid_size) < 1 or any(s % spec.stride for s in self.img_size):
            raise StemSpecError(
                f"image size {self.img_size[0]} is not divisible by the stem's total stride "
                f"{spec.stride}"
            )
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.flatten = True

        layers: list[nn.Module] = []
        c_in = in_chans
        for i, layer in enumerate(spec.layers):
            last = i == len(spec.layers) - 1
            c_out = embed_dim if last else layer.channels or embed_dim
            norm, act = (spec.post_norm, spec.post_act) if last else (spec.norm, spec.act)
            # a projection whose kernel equals its stride tiles the image (no padding)
            pad = 0 if layer.kernel == layer.stride else (layer.kernel - 1) // 2
            conv_bias = (bias and last) or norm == "none"  # a following norm makes bias redundant
            block = nn.Sequential()
            block.add_module(
                "conv",
                nn.Conv2d(c_in, c_out, layer.kernel, layer.stride, pad, bias=conv_bias,
                          device=device, dtype=dtype),
            )
            if norm != "none":
                block.add_module("norm", _norm(norm, c_out).to(device=device, dtype=dtype))
            if act != "none":
                block.add_module("act", _act(act))
            layers.append(block)
            c_in = c_out
        self.stem = nn.Sequential(*layers)

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return self.patch_size[0] if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        return img_size[0] // self.patch_size[0], img_size[1] // self.patch_size[1]

    def init_weights(self) -> None:
        """The spec's init: ``torch`` keeps PyTorch's default conv init, as VOLO (the scaled-ReLU
        conv-stem) and timm's patchify ``PatchEmbed`` do; ``pycls`` is :func:`pycls_stem_init`.
        BN starts at 1 / 0 (PyTorch's default) either way."""
        if self.spec.init == "pycls":
            pycls_stem_init(self)
        for m in self.stem.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != self.img_size:
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} does not match the model's {self.img_size}"
            )
        x = self.stem(x)
        return x.flatten(2).transpose(1, 2)



def pycls_stem_init(embed: StemEmbed) -> None:
    """pycls's init of a ViT stem (facebookresearch/pycls, branch ``vitconfigs`` 206d0db, the
    code of Xiao et al.'s configs: ``pycls/models/vit.py:264-281``).

    * patchify (one conv): truncated normal, std sqrt(1 / fan_in), zero bias;
    * conv-stem: the 3x3 convs keep PyTorch's default init ("Use default pytorch init for other
      conv layers in the C-stem"); the last (1x1) conv is normal with std sqrt(2 / C_out), zero
      bias.

    (pycls ``main`` changed this in 2022, after the paper: 3x3 convs N(0, sqrt(2 / C_out)), the
    1x1 N(0, sqrt(1 / C_out)). Neither is He fan-out, sqrt(2 / (k^2 C_out)).)
    """
    convs = [block.conv for block in embed.stem]
    last = convs[-1]
    if len(convs) == 1:
        fan_in = last.in_channels * last.kernel_size[0] * last.kernel_size[1]
        nn.init.trunc_normal_(last.weight, std=math.sqrt(1.0 / fan_in))
    else:
        for conv in convs[:-1]:
            conv.reset_parameters()
        nn.init.normal_(last.weight, mean=0.0, std=math.sqrt(2.0 / last.out_channels))
    if last.bias is not None:
        nn.init.zeros_(last.bias)

"""The model catalogue as data: every model's name, description, body dimensions and stem, no
framework import (``srv models``, dry runs and the cached FLOPs read it without importing timm;
:mod:`reproduce.models.vit` builds the entries).

Sources:
* DeiT (Touvron et al. 2021, arXiv 2012.12877): tiny / small / base, patch 16, MLP ratio 4.
* Xiao et al. 2021 (arXiv 2106.14881) Table 1 and pycls ``vitconfigs``: ViT_P / ViT_C at
  1, 4, 18 and 36 GF. The ViT_C models drop one transformer block to pay for the stem.
* Wang et al. 2022 (arXiv 2109.03810): the scaled-ReLU conv-stem and its ablations.
* ``vit-mini-*``: the CPU-scale model of docs/paper.md §5 (width 96, depth 6, 3 heads, 32x32
  inputs, total stride 4), for the digits experiments.

Each entry also names the recipe it is trained with when none is given (``ModelEntry.recipe``)
and its init scheme (:mod:`reproduce.models.init`).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from reproduce.errors import UserError
from reproduce.models.stems import STEM_KINDS, StemSpec, stem_spec

__all__ = ["TIMM_PREFIX", "ModelEntry", "ViTSize", "CATALOGUE", "SIZES", "UnknownModelError",
           "get_entry"]

TIMM_PREFIX = "srv_"


class UnknownModelError(UserError, KeyError):
    """A model name that is not in the catalogue (with the closest names)."""

    def __init__(self, name: str, suggestions: list[str]) -> None:
        hint = f"; did you mean {', '.join(suggestions)}?" if suggestions else ""
        super().__init__(f"unknown model {name!r}{hint} (list them with 'srv models')")
        self.message = self.args[0]

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ViTSize:
    """Transformer dimensions and the input geometry a size is defined for."""

    label: str
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    img_size: int = 224
    stride: int = 16
    stem_width: int = 64  # hidden width of the scaled-ReLU conv-stem (VOLO default)
    first_kernel: int = 7  # VOLO's first conv is 7x7
    recipe: str = "deit"  # the recipe this body is trained with when none is named
    init: str = "deit"  # weight init scheme (reproduce.models.init)


SIZES: dict[str, ViTSize] = {
    "t": ViTSize("DeiT-Ti", 192, 12, 3, 4.0),
    "s": ViTSize("DeiT-S", 384, 12, 6, 4.0),
    "b": ViTSize("DeiT-B", 768, 12, 12, 4.0),
    # docs/paper.md §5: 32x32 digits, 64 tokens; the conv-stem there is 3x3 convs, width 32
    "mini": ViTSize("CPU-scale", 96, 6, 3, 4.0, img_size=32, stride=4, stem_width=32,
                    first_kernel=3, recipe="mini", init="timm"),
}

# Xiao et al. Table 1: (width, MLP ratio, heads, blocks of ViT_P, ViT_C stem, recipe); the 36GF
# configs train at base lr 7e-4 (pycls vitconfigs ViT-{P,C}-36GF_adamw_32gpus.yaml BASE_LR)
_XIAO_18_36 = "3s2c64,3s2c128,3s1c128,3s2c256,3s1c256,3s2c512,1s1"
_XIAO: dict[str, tuple[int, float, int, int, str, str]] = {
    "1gf": (192, 3.0, 3, 12, "3s2c24,3s2c48,3s2c96,3s2c192,1s1", "xiao"),
    "4gf": (384, 3.0, 6, 12, "3s2c48,3s2c96,3s2c192,3s2c384,1s1", "xiao"),
    "18gf": (768, 4.0, 12, 12, _XIAO_18_36, "xiao"),
    "36gf": (1024, 4.0, 16, 14, _XIAO_18_36, "xiao-36gf"),
}


@dataclass(frozen=True)
class ModelEntry:
    """A catalogue model: its CLI name, timm name, description and build arguments."""

    name: str
    description: str
    embed_dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    img_size: int
    stem: str  # a stem kind of STEM_KINDS, or a spec string
    stride: int
    stem_width: int = 64
    first_kernel: int = 7
    family: str = "vit"
    recipe: str = "deit"  # the default recipe of `srv train` / `srv analyze`
    init: str = "timm"  # weight init scheme of reproduce.models.init

    @property
    def timm_name(self) -> str:
        return TIMM_PREFIX + self.name.replace("-", "_")

    def stem_spec(self, stride: int | None = None, stem_width: int | None = None) -> StemSpec:
        """The stem of this model, optionally at another total stride / hidden width."""
        stride = stride or self.stride
        if self.stem in STEM_KINDS:
            return stem_spec(self.stem, stride, self.embed_dim, stem_width or self.stem_width,
                             self.first_kernel)
        spec = StemSpec.parse(self.stem)
        if spec.stride != stride:
            raise ValueError(f"{self.name} has a fixed stem of total stride {spec.stride}")
        return spec


def _build_catalogue() -> dict[str, ModelEntry]:
    entries: dict[str, ModelEntry] = {}
    for size_key, size in SIZES.items():
        for stem, stem_desc in STEM_KINDS.items():
            name = f"vit-{size_key}-{stem}"
            entries[name] = ModelEntry(
                name=name,
                description=f"{size.label} ({size.embed_dim}w x {size.depth}, "
                f"{size.img_size}px/{size.stride}), {stem_desc}",
                embed_dim=size.embed_dim,
                depth=size.depth,
                num_heads=size.num_heads,
                mlp_ratio=size.mlp_ratio,
                img_size=size.img_size,
                stem=stem,
                stride=size.stride,
                stem_width=size.stem_width,
                first_kernel=size.first_kernel,
                recipe=size.recipe,
                init=size.init,
            )
    for gf, (width, mlp_ratio, heads, blocks, c_stem, recipe) in _XIAO.items():
        entries[f"vitp-{gf}"] = ModelEntry(
            name=f"vitp-{gf}",
            description=f"Xiao et al. ViT_P-{gf.upper()}: patchify stem, {blocks} blocks",
            embed_dim=width, depth=blocks, num_heads=heads, mlp_ratio=mlp_ratio, img_size=224,
            stem="patch", stride=16, family="xiao", recipe=recipe, init="pycls",
        )
        entries[f"vitc-{gf}"] = ModelEntry(
            name=f"vitc-{gf}",
            description=f"Xiao et al. ViT_C-{gf.upper()}: conv-stem {c_stem.split(',1s1')[0]}, "
            f"{blocks - 1} blocks (one dropped to pay for the stem)",
            embed_dim=width, depth=blocks - 1, num_heads=heads, mlp_ratio=mlp_ratio,
            img_size=224, stem=c_stem + ";norm=bn;act=relu;init=pycls", stride=16,
            family="xiao", recipe=recipe, init="pycls",
        )
    return entries


CATALOGUE: dict[str, ModelEntry] = _build_catalogue()


def get_entry(name: str) -> ModelEntry:
    """The catalogue entry for a CLI name (``vit-s-conv``) or timm name (``srv_vit_s_conv``)."""
    if name in CATALOGUE:
        return CATALOGUE[name]
    short = name.removeprefix(TIMM_PREFIX).replace("_", "-")
    if short in CATALOGUE:
        return CATALOGUE[short]
    raise UnknownModelError(name, difflib.get_close_matches(short, list(CATALOGUE), n=3,
                                                            cutoff=0.5))

"""Building the catalogue's models: timm ``VisionTransformer`` instances with a
:class:`~reproduce.models.stems.StemEmbed` as their ``embed_layer``, initialised as each body's
source (:mod:`reproduce.models.init`: DeiT sizes as timm 0.3.2 (DeiT's), Xiao et al.'s models as
pycls, ``vit-mini-*`` as timm 1.0). Each entry of :mod:`reproduce.models.catalogue` is registered
with timm under the ``srv_`` prefix, so ``timm.create_model("srv_vit_s_conv")`` builds the same
model as ``srv train vit-s-conv`` (import :mod:`reproduce.models.vit` first; ``create`` does).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import VisionTransformer

from reproduce.models.catalogue import CATALOGUE, ModelEntry, get_entry
from reproduce.models.init import apply_init
from reproduce.models.stems import STEM_KINDS, StemEmbed, StemSpec, stem_spec

__all__ = ["create"]


def _cfg(entry: ModelEntry, **kwargs: Any) -> dict[str, Any]:
    """DeiT's data config (not timm's ViT default of Inception mean/std and crop 0.9)."""
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, entry.img_size, entry.img_size),
        "pool_size": None,
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.stem.0.conv",
        "classifier": "head",
        **kwargs,
    }


def _create(
    entry: ModelEntry,
    pretrained: bool = False,
    stem: str | StemSpec | None = None,
    stem_width: int | None = None,
    **kwargs: Any,
) -> VisionTransformer:
    """Build ``entry`` as a timm ``VisionTransformer``.

    ``img_size`` and ``patch_size`` (the total stride) may be changed; the stem keeps its shape.
    ``stem`` replaces the stem by a kind (``conv-nobn``) or a spec string / :class:`StemSpec`;
    ``stem_width`` changes the conv-stem's hidden width.
    """
    if pretrained:
        raise ValueError("srv models have no pretrained weights; train them with 'srv train'")
    stride = kwargs.pop("patch_size", None) or entry.stride
    if isinstance(stem, StemSpec):
        spec = stem
    elif stem in STEM_KINDS:
        spec = stem_spec(stem, stride, entry.embed_dim, stem_width or entry.stem_width,
                         entry.first_kernel)
    elif stem:
        spec = StemSpec.parse(stem)
    else:
        spec = entry.stem_spec(stride, stem_width)
    model_args = dict(
        img_size=entry.img_size,
        patch_size=spec.stride,
        embed_dim=entry.embed_dim,
        depth=entry.depth,
        num_heads=entry.num_heads,
        mlp_ratio=entry.mlp_ratio,
        qkv_bias=True,
        embed_layer=partial(StemEmbed, spec),
    )
    model_args.update(kwargs)
    model = build_model_with_cfg(VisionTransformer, entry.timm_name, pretrained=False,
                                 **model_args)
    apply_init(model, entry.init)
    return model


def create(name: str, **kwargs: Any) -> VisionTransformer:
    """Build a catalogue model by CLI or timm name (``num_classes``, ``drop_path_rate``,
    ``img_size``, ``patch_size``, ``stem``, ``stem_width`` ... are passed through)."""
    return _create(get_entry(name), **kwargs)


default_cfgs = generate_default_cfgs(
    {entry.timm_name: _cfg(entry) for entry in CATALOGUE.values()}
)


def _register(entry: ModelEntry) -> None:
    def entrypoint(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
        return _create(entry, pretrained=pretrained, **kwargs)

    entrypoint.__name__ = entrypoint.__qualname__ = entry.timm_name
    entrypoint.__doc__ = entry.description
    entrypoint.__module__ = __name__
    register_model(entrypoint)


for _entry in CATALOGUE.values():
    _register(_entry)

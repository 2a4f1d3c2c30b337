"""Whole-model weight initialisation, as each model's source does it.

timm's ``VisionTransformer`` initialises itself (``init_weights_vit_timm``: every ``Linear``
truncated normal std 0.02 with zero bias, ``pos_embed`` truncated normal 0.02, ``cls_token``
normal std 1e-6, LayerNorm 1 / 0, the stem by its own ``init_weights``). Two sources differ:

* ``deit``: DeiT trained timm 0.3.2's ViT (deit ``requirements.txt``, ``models.py:78-81``), whose
  init is the same except the class token, truncated normal std 0.02
  (pytorch-image-models 6504a428 ``timm/models/vision_transformer.py:241-252``).
* ``pycls``: Xiao et al.'s models as pycls builds them (facebookresearch/pycls, branch
  ``vitconfigs`` 206d0db, the branch that holds their configs: ``pycls/models/vit.py:264-309``).

Each catalogue entry names its scheme (``ModelEntry.init``); :func:`apply_init` runs it after
timm's own init.
"""

from __future__ import annotations

from torch import nn

from reproduce.models.stems import StemEmbed, pycls_stem_init

__all__ = ["INIT_SCHEMES", "apply_init", "deit_init", "pycls_init"]

#: scheme -> what it is (``timm`` leaves timm's init as it is)
INIT_SCHEMES = {
    "timm": "timm 1.0's ViT init (Linear trunc-normal 0.02, cls token normal 1e-6)",
    "deit": "timm 0.3.2's ViT init as DeiT trained it: timm's, with the cls token "
            "trunc-normal 0.02",
    "pycls": "pycls's init_weights_vit (Xiao et al.): zero head, Xavier MLP and qkv, stem "
             "per pycls",
}


def deit_init(model: nn.Module) -> None:
    """The class token as timm 0.3.2 (DeiT) initialised it: truncated normal, std 0.02
    (``vision_transformer.py:242`` at 6504a428); everything else already matches."""
    nn.init.trunc_normal_(model.cls_token, std=0.02)


def pycls_init(model: nn.Module) -> None:
    """pycls's ``init_weights_vit`` (``vitconfigs`` 206d0db ``pycls/models/vit.py:264-309``) on a
    timm ``VisionTransformer`` (the two have the same layers; pycls's names in brackets):

    * stem: :func:`~reproduce.models.stems.pycls_stem_init` (lines 267-281);
    * attention in-projection (``attn_proj``, timm ``qkv``): Xavier uniform, zero bias (284-288);
    * attention out-projection (``out_proj``, timm ``proj``): PyTorch's default weight, zero bias
      (289-292);
    * MLP (``mlp_block``, timm ``fc1`` / ``fc2``): Xavier uniform, bias normal std 1e-6 (295-298);
    * head (``head_fc``): zero weight and bias (299-302);
    * LayerNorm / BatchNorm: PyTorch's default, 1 / 0 (305-307);
    * position embedding: normal std 0.02 (309); class token: zeros (213).
    """
    if isinstance(model.patch_embed, StemEmbed):
        pycls_stem_init(model.patch_embed)
    for block in model.blocks:
        nn.init.xavier_uniform_(block.attn.qkv.weight)
        nn.init.zeros_(block.attn.qkv.bias)
        block.attn.proj.reset_parameters()
        nn.init.zeros_(block.attn.proj.bias)
        for fc in (block.mlp.fc1, block.mlp.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.normal_(fc.bias, std=1e-6)
        for norm in (block.norm1, block.norm2):
            norm.reset_parameters()
    model.norm.reset_parameters()
    if isinstance(model.head, nn.Linear):
        nn.init.zeros_(model.head.weight)
        nn.init.zeros_(model.head.bias)
    nn.init.normal_(model.pos_embed, mean=0.0, std=0.02)
    nn.init.zeros_(model.cls_token)


def apply_init(model: nn.Module, scheme: str) -> None:
    """Run an init scheme of :data:`INIT_SCHEMES` on a freshly built model."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; known: {', '.join(INIT_SCHEMES)}")
    if scheme == "deit":
        deit_init(model)
    elif scheme == "pycls":
        pycls_init(model)

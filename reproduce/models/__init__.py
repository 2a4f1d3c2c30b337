"""Model catalogue of srv: ViTs with patchify, scaled-ReLU conv and Xiao et al. stems.

Importing this package registers every catalogue model with timm (``srv_`` prefix).
"""

from reproduce.models.stems import STEM_KINDS, StemEmbed, StemSpec, StemSpecError, stem_spec
from reproduce.models.vit import CATALOGUE, SIZES, ModelEntry, UnknownModelError, create, get_entry

__all__ = [
    "CATALOGUE",
    "SIZES",
    "STEM_KINDS",
    "ModelEntry",
    "StemEmbed",
    "StemSpec",
    "StemSpecError",
    "UnknownModelError",
    "create",
    "get_entry",
    "stem_spec",
]

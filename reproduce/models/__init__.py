"""Model catalogue of srv: ViTs with patchify, scaled-ReLU conv and Xiao et al. stems.

The catalogue (:mod:`reproduce.models.catalogue`) is plain data; timm is imported only when a
model is built (:func:`create`, which also registers every catalogue model with timm under the
``srv_`` prefix), so listing, dry runs and cached FLOPs start in about half the time.
"""

from __future__ import annotations

from reproduce.models.catalogue import CATALOGUE, SIZES, ModelEntry, UnknownModelError, get_entry
from reproduce.models.factory import create
from reproduce.models.stems import STEM_KINDS, StemEmbed, StemSpec, StemSpecError, stem_spec

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

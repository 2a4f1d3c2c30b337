"""Building a catalogue model: timm is imported here only when a model is built, so listing,
dry runs and cached FLOPs never pay for it (re-exported as :func:`reproduce.models.create`)."""

from __future__ import annotations

from typing import Any

__all__ = ["create"]


def create(name: str, **kwargs: Any) -> Any:
    """Build a catalogue model (:func:`reproduce.models.vit.create`; imports timm)."""
    from reproduce.models.vit import create as build

    return build(name, **kwargs)

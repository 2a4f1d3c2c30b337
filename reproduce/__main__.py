"""``python -m reproduce`` runs the ``srv`` CLI (used by torchrun launches)."""

from .cli import main

main()

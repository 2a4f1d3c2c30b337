"""``python -m reproduce`` runs the ``srv`` CLI (used by torchrun launches)."""

from reproduce.cli import main

main()

"""The seeds a verdict needs, from one place: the claims file's ``[design]`` table
(``recipes/claims/wang2022.toml``, or ``$SRV_CLAIMS``), which pre-registers the confirmatory
run's seeds per arm. ``srv ablate --help``, the dry runs' seeds note and the ImageNet-scale plan
of ``srv claims`` all quote it from here (read with ``tomllib`` alone, so ``--help`` stays
fast; the full check of the file is :func:`reproduce.report.claims.load_claims`'s)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

__all__ = ["FALLBACK_SEEDS", "design_seeds", "seeds_arg"]

#: what the paper's claims file pre-registers, for a claims file without a [design] table
FALLBACK_SEEDS = (100, 101, 102, 103)


def _claims_file() -> Path:
    env = os.environ.get("SRV_CLAIMS")
    if env:
        return Path(env)
    from reproduce.recipes.recipe import recipe_dir

    return recipe_dir() / "claims" / "wang2022.toml"


def design_seeds(path: Path | str | None = None) -> list[int]:
    """The ``[design]`` seeds per arm of the claims file (``path``, else the default one);
    :data:`FALLBACK_SEEDS` when the file or its table cannot be read."""
    try:
        doc = tomllib.loads(Path(path or _claims_file()).read_text())
        seeds = [int(s) for s in doc["design"]["seeds"]]
    except (OSError, ValueError, KeyError, TypeError):
        return list(FALLBACK_SEEDS)
    return seeds or list(FALLBACK_SEEDS)


def seeds_arg(seeds: list[int] | tuple[int, ...]) -> str:
    """``--seeds`` as a user types it: ``100-103`` for a run of consecutive seeds, else
    ``0,5,9``."""
    seeds = sorted(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))

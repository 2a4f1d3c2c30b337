"""The full run (``srv claims --run``): every grid the claims need, at each claim's preset.

Each claim of ``recipes/claims/wang2022.toml`` names its grid and the preset its evidence comes
from (``preset``; the quick scale for every claim that has one). :func:`claim_grids` turns the
claims into the grids to run, in the claims file's order, one entry per (grid, preset) with the
claims it feeds; the cost claim needs no runs (the loader, :mod:`.spec`, already checked each
preset's seeds against its calibration's). :func:`imagenet_lines` is the same plan at the
paper's scale: each claim's arms at its grid's ``full`` preset with the seeds a verdict needs,
and their GPU-hours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError

__all__ = ["SCALES", "arm_cells", "claim_grids", "claim_preset", "imagenet_lines",
           "select_claims"]

#: ``quick``: each claim's own preset (digits on CPU); ``regime``: the regime claims file's
#: presets (Fashion-MNIST on CPU, issue 28); ``imagenet``: the grids' full presets
SCALES = ("quick", "regime", "imagenet")


def claim_preset(claim: Any) -> str:
    """The preset a claim's evidence comes from: its ``preset``, else ``quick``."""
    return getattr(claim, "preset", None) or "quick"


def select_claims(cs: Any, ids: Sequence[str] | None) -> list[Any]:
    """The claims named (all when none), checked: an unknown id is a one-line error."""
    if not ids:
        return list(cs.claims)
    known = [c.id for c in cs.claims]
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise SrvError(f"no claim {', '.join(unknown)} in {cs.path}; claims: {', '.join(known)}")
    return [c for c in cs.claims if c.id in ids]


def claim_grids(claims: Iterable[Any]) -> list[tuple[Any, list[str]]]:
    """``(grid at the claim's preset, [claim ids])`` per (grid, preset), in claims order; the
    cost claim (an architecture property) and a claim not testable at the scale need none."""
    from reproduce.recipes.grids import load_grid

    order: dict[tuple[str, str], list[str]] = {}
    for claim in claims:
        if claim.statistic == "cost" or getattr(claim, "not_testable", ""):
            continue
        order.setdefault((claim.grid, claim_preset(claim)), []).append(claim.id)
    out = []
    for (grid, preset), ids in order.items():
        g = load_grid(grid)
        if preset not in g.presets:
            raise SrvError(f"claims {', '.join(ids)}: grid {grid!r} has no preset {preset!r} "
                           f"(its presets: {', '.join(g.presets)}); fix the claims file")
        out.append((load_grid(grid, preset=preset), ids))
    return out


def arm_cells(claim: Any, grid: Any) -> list[Any]:
    """The grid's cells a claim reads: those on arm a or arm b (every value of any axis an arm
    does not fix, e.g. the spread axis)."""
    def resolve(arm: dict[str, str]) -> dict[str, str]:
        out = {}
        for name, label in arm.items():
            labels = grid.axis(name).labels
            out[name] = labels[0 if label == "@first" else -1] if label.startswith("@") \
                else label
        return out

    arms = [resolve(claim.a), resolve(claim.b)]
    return [c for c in grid.cells()
            if any(all(c.label_dict.get(k) == v for k, v in arm.items()) for arm in arms)]


def _seeds(full: Any, design: Sequence[int] | None) -> list[int]:
    """The seeds a verdict needs at the paper's scale: the claims file's [design] seeds
    (:func:`reproduce.recipes.design.design_seeds`, one source for every command; the ImageNet
    effect sizes are unknown, so this is a budget, not a power calculation); a grid whose full
    preset pairs by random draw keeps its own seeds."""
    from reproduce.recipes.design import design_seeds

    if any(a.kind == "random" for a in full.axes):
        return list(full.seeds)
    return list(design or design_seeds())


def imagenet_lines(claims: Sequence[Any], img_per_s: str | float | None,
                   folders: Sequence[Path], gpus: int = 8,
                   seeds: Sequence[int] | None = None) -> list[str]:
    """Per claim the runs it needs at the paper's scale, their GPU-hours and days on ``gpus``
    GPUs, each rate labelled (:class:`reproduce.training.cost.GpuRates`); then the total over
    distinct runs (claims share runs: the conv-stem arm is in most of them) and DeiT's published
    cost beside one DeiT-S run of the plan. ``seeds``: the claims file's [design] seeds."""
    from reproduce.recipes.design import seeds_arg
    from reproduce.recipes.grids import load_grid
    from reproduce.training.builders import steps_per_epoch
    from reproduce.training.config import resolve_config
    from reproduce.training.cost import (
        DEIT_S_PUBLISHED,
        GpuRates,
        parse_rates,
        rate_notes,
        run_cost,
        wall_clock,
    )

    rate = GpuRates(parse_rates(img_per_s), folders)
    design = seeds
    steps: dict[tuple[Any, ...], int] = {}
    runs: dict[str, float | None] = {}
    lines = []
    for claim in claims:
        if claim.statistic == "cost":
            lines.append(f"{claim.id}: no runs (fvcore counts of {' vs '.join(claim.models)})")
            continue
        full0 = load_grid(claim.grid, preset="full")
        seeds = _seeds(full0, design)
        grid = load_grid(claim.grid, preset="full", seeds=seeds)
        cells = arm_cells(claim, grid)
        hours: list[float | None] = []
        images = 0
        sources: set[str] = set()
        epochs: set[int] = set()
        for cell in cells:
            cfg = resolve_config(cell.model, cell.recipe, {**cell.override_dict,
                                                           "seed": cell.seed})
            r = cfg.recipe
            key = (r.dataset, r.batch_size, r.aug_repeats, r.train_subset)
            if key not in steps:
                steps[key] = steps_per_epoch(r, 1)[0]
            cost = run_cost(r, steps[key], rate(cell.model, r))
            images += cost.images
            hours.append(cost.gpu_hours)
            runs[cfg.run_name] = cost.gpu_hours
            sources.add(f"{cell.model}: {cost.throughput.describe()}")
            epochs.add(int(r.epochs))
        total = sum(h or 0.0 for h in hours)
        ep = "/".join(str(e) for e in sorted(epochs))
        lines.append(f"{claim.id}: {claim.grid} / full ({grid.recipe} recipe), {len(cells)} "
                     f"runs ({len(cells) // max(1, len(seeds))} cells x {len(seeds)} "
                     f"seed{'s' if len(seeds) > 1 else ''}, --seeds {seeds_arg(seeds)}), {ep} "
                     f"epochs, {images:,} training images: {total:,.0f} GPU-hours, about "
                     f"{wall_clock(total, gpus)}")
        lines += [f"    {s}" for s in sorted(sources)]
    total = sum(h or 0.0 for h in runs.values())
    lines.append(f"total: {len(runs)} distinct runs (a run two claims share counted once), "
                 f"{total:,.0f} GPU-hours, about {wall_clock(total, gpus)} (--gpus); "
                 f"ImageNet-1k train (1,281,167 images) assumed, evaluation not counted")
    deit = resolve_config("vit-s-patch", "deit", {}).recipe
    one = run_cost(deit, steps_per_epoch(deit, 1)[0], rate("vit-s-patch", deit))
    lines += rate_notes(rate.cache.values())
    if one.throughput is not None:
        lines.append(f"sanity check: one DeiT-S (vit-s-patch) 300-epoch run of this plan is "
                     f"{one.gpu_hours:,.1f} GPU-hours at {one.throughput.img_per_s:,.0f} img/s "
                     f"per GPU; {DEIT_S_PUBLISHED}")
    return lines

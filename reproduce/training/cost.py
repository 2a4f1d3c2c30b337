"""What a run or a grid will cost, said before anything is launched: the training images it
processes and the GPU-hours at a throughput that is measured (``srv bench`` figures in
``tables/benchmarks/*.json``) or stated (``--img-per-s``), and the seeds a verdict needs.

The images are the engine's own count: updates per epoch (the sampler's samples per rank over the
per-device batch, the last partial batch dropped) x global batch x epochs; evaluation passes are
not counted (one val pass per epoch is a few percent of a training epoch on ImageNet). GPU-hours
assume the per-GPU throughput holds on every GPU of a run (DDP's near-linear scaling).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from reproduce.recipes.recipe import Recipe

__all__ = ["Cost", "Throughput", "measured_throughput", "run_cost", "seeds_note"]


@dataclass(frozen=True)
class Throughput:
    """Training images per second on one GPU, and where the figure comes from."""

    img_per_s: float
    source: str


@dataclass(frozen=True)
class Cost:
    images: int  # training images the run processes (all epochs, all ranks)
    throughput: Throughput | None

    @property
    def gpu_hours(self) -> float | None:
        return None if self.throughput is None else self.images / self.throughput.img_per_s / 3600

    def describe(self) -> str:
        """``38,430,720 training images; 4.0 GPU-hours at 2,668 img/s per GPU (source)``."""
        text = f"{self.images:,} training images"
        if self.throughput is None:
            return text + "; GPU-hours: give --img-per-s (no srv bench figure for this model)"
        return (f"{text}; {self.gpu_hours:,.1f} GPU-hours at {self.throughput.img_per_s:,.0f} "
                f"img/s per GPU ({self.throughput.source})")


def run_cost(r: Recipe, steps_per_epoch: int, throughput: Throughput | None) -> Cost:
    """The cost of one run of recipe ``r`` at ``steps_per_epoch`` updates per epoch."""
    return Cost(int(steps_per_epoch) * int(r.batch_size) * int(r.epochs), throughput)


def measured_throughput(model: str, r: Recipe, folders: Iterable[Path]) -> Throughput | None:
    """The ``srv bench`` figure for ``model`` in the first of ``folders`` that has one
    (``*.json`` written by ``srv bench --out``: ``{"environment", "results": [{"model",
    "mode", "img_per_s", "batch", "amp"}]}``), in the recipe's mode (compiled when it sets
    ``compile``, else eager); None when no file measures it."""
    mode = "compile" if getattr(r, "compile", False) else "eager"
    for folder in folders:
        for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else ():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            results = data.get("results") if isinstance(data, dict) else None
            for rec in results or ():
                if (isinstance(rec, dict) and rec.get("model") == model
                        and rec.get("mode") == mode and rec.get("img_per_s")):
                    env = str(data.get("environment", "")).split(",")
                    where = ", ".join(x.strip() for x in env if "NVIDIA" in x or "GPU" in x)
                    return Throughput(float(rec["img_per_s"]),
                                      f"srv bench, {path.name}: {where or env[0]}, {mode}, "
                                      f"batch {rec.get('batch')}, {rec.get('amp')}")
    return None


def seeds_note(seeds: int, draws: int = 0) -> str:
    """What ``srv claims`` can say from ``seeds`` seeds per arm; ``draws`` > 0 for a grid with
    a random (lr, wd) axis, whose stems are compared paired by draw (stable-edf), not by seed.
    The seeds to add are the claims file's [design] seeds (:mod:`reproduce.recipes.design`)."""
    from reproduce.recipes.design import design_seeds, seeds_arg

    if draws:
        return (f"{seeds} seed{'s' if seeds != 1 else ''} x {draws} (lr, wd) draws per stem: "
                "srv claims pairs the stems' errors by draw (stable-edf), so one seed suffices; "
                "the per-seed claims do not use this grid")
    design = design_seeds()
    if seeds < 2:
        return (f"{seeds} seed per cell: srv claims can give no verdict from these runs (one "
                f"seed per arm has no variance, so no test); the claims file's pre-registered "
                f"design runs {len(design)} seeds per arm: add --seeds {seeds_arg(design)}")
    return (f"{seeds} seeds per cell: srv claims tests each claim on them, and says how many "
            "seeds per arm would decide one it finds inconclusive")

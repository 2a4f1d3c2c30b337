"""What a run or a grid will cost, said before anything is launched, each figure labelled for
what it is.

* **Time on this machine** (:class:`StepTimes`): the seconds per update of the finished runs in
  the runs folder *with the same model and config* (:func:`speed_key`: every recipe value but
  the seed, the lr and its schedule, which cannot change how long an update takes),
  their median, times the updates to do: "extrapolated from N matching runs". A run of another
  model or batch never counts. Without one, the CPU scale (vit-mini on digits) has an assumed
  rate (:data:`ASSUMED_S_PER_STEP`), said as such; other runs have none.
* **GPU-hours** (:class:`GpuRates`): the training images (the engine's own count: updates per
  epoch x global batch x epochs; evaluation not counted) at a per-GPU throughput: ``--img-per-s``
  (one figure, or one per model), else ``srv bench``'s figure for the model in
  ``tables/benchmarks/*.json`` (GPU files only): an engine + loader rate (``srv bench
  --pipelines timm`` / ``dali`` on JPEGs) when one was measured, else the bare training step on
  synthetic data already on the GPU, which leaves out data loading and so is a *compute-only lower
  bound* on the GPU-hours. A model without a figure takes the measured rate of its stem kind's
  reference (``vit-s-conv`` for every conv-stem variant, ``vit-s-patch`` for patchify ones)
  scaled by fvcore GFLOPs, else the docs/paper.md anchor. GPU-hours assume the per-GPU rate holds
  on every GPU (DDP's near-linear scaling); :func:`wall_clock` turns them into days on N GPUs,
  beside DeiT's published cost (:data:`DEIT_S_PUBLISHED`) as a sanity check.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError
from reproduce.recipes.recipe import Recipe

__all__ = ["ASSUMED_S_PER_STEP", "ANCHOR_IMG_PER_S", "DEIT_S_PUBLISHED", "Cost", "GpuRates",
           "StepRate", "StepTimes", "Throughput", "cpu_scale", "format_seconds",
           "measured_throughput", "parse_rates", "rate_notes", "run_cost", "seeds_note",
           "speed_key", "wall_clock"]

#: a vit-mini cell's wall time per update of 128 digits images when no matching run says
#: better: the full run's 100 8-epoch cells of 88 updates took 50-61 s each, median 56 s, two at
#: a time (--jobs 2) on the idle 2-core AMD EPYC development machine (docs/claims.md)
ASSUMED_S_PER_STEP = 0.64
#: ViT-S (patchify) on one H100, bf16, torch.compile (docs/paper.md §4, the project's own
#: measurement): the figure when no srv bench file measures a model or its reference
ANCHOR_IMG_PER_S, ANCHOR_MODEL = 8233.0, "vit-s-patch"
#: DeiT (Touvron et al. 2021, §5 "Training time"): DeiT-S and DeiT-Ti train 300 epochs in less
#: than 3 days on 4 GPUs (V100s, the paper's hardware); DeiT-B in 53 h on one 8-GPU node
DEIT_S_PUBLISHED = ("DeiT's published cost (Touvron et al. 2021, §5): DeiT-S, 300 epochs, under "
                    "3 days on 4 V100 GPUs, i.e. under 288 V100 GPU-hours per run")

#: what each kind of throughput figure is, as the dry runs say it
KINDS = {"stated": "stated (--img-per-s)", "loader": "engine + loader rate",
         "bare": "compute-only lower bound", "scaled": "compute-only lower bound",
         "anchor": "compute-only lower bound"}


@dataclass(frozen=True)
class Throughput:
    """Training images per second on one GPU, what kind of figure it is (:data:`KINDS`) and
    where it comes from."""

    img_per_s: float
    source: str
    kind: str = "stated"

    def halved_for_sam(self) -> Throughput:
        """SAM takes two forward / backward passes a step."""
        return Throughput(self.img_per_s / 2, f"{self.source}; halved: SAM's two passes a step",
                          self.kind)

    def describe(self) -> str:
        """``2,668 img/s per GPU, compute-only lower bound: srv bench bare step, ...``."""
        where = "" if self.kind == "stated" else f": {self.source}"
        return f"{self.img_per_s:,.0f} img/s per GPU, {KINDS[self.kind]}{where}"


@dataclass(frozen=True)
class Cost:
    images: int  # training images the run processes (all epochs, all ranks)
    throughput: Throughput | None

    @property
    def gpu_hours(self) -> float | None:
        return None if self.throughput is None else self.images / self.throughput.img_per_s / 3600

    def describe(self) -> str:
        """``38,430,720 training images; 4.0 GPU-hours at 2,668 img/s per GPU, compute-only
        lower bound: srv bench, ...``."""
        text = f"{self.images:,} training images"
        if self.throughput is None:
            return text + "; GPU-hours: give --img-per-s (no srv bench figure for this model)"
        return f"{text}; {self.gpu_hours:,.1f} GPU-hours at {self.throughput.describe()}"


def rate_notes(rates: Iterable[Throughput | None]) -> list[str]:
    """One line per kind of figure among ``rates`` that needs saying what it leaves out."""
    kinds = {t.kind for t in rates if t is not None}
    out = []
    if kinds & {"bare", "scaled", "anchor"}:
        out.append("compute-only lower bound: srv bench's bare training step on synthetic data "
                   "already on the GPU, no JPEG decoding or augmentation, so these GPU-hours and "
                   "days are lower bounds (docs/paper.md §4: DeiT's CPU pipeline with 16 "
                   "workers fed about 1,565 img/s on the H100 machine); srv bench --pipelines "
                   "timm,dali measures the engine + loader rate, used once in the file")
    if "stated" in kinds:
        out.append("stated: the --img-per-s figure, as given")
    return out


def run_cost(r: Recipe, steps_per_epoch: int, throughput: Throughput | None) -> Cost:
    """The cost of one run of recipe ``r`` at ``steps_per_epoch`` updates per epoch."""
    return Cost(int(steps_per_epoch) * int(r.batch_size) * int(r.epochs), throughput)


def wall_clock(gpu_hours: float, gpus: int) -> str:
    """``2.6 days on 8 GPUs`` (``11.2 h`` under a day, ``14 min`` under an hour)."""
    hours = gpu_hours / max(1, gpus)
    when = (f"{hours * 60:.0f} min" if hours < 1 else f"{hours:,.1f} h" if hours < 24
            else f"{hours / 24:,.1f} days")
    return f"{when} on {gpus} GPU{'s' if gpus != 1 else ''}"


def format_seconds(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2.3 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- GPU throughput ----------------------------------------------------------------------------


def parse_rates(text: str | float | None) -> dict[str, float]:
    """``--img-per-s``: one figure for every model (``2668``; key ``""``) or one per model
    (``vit-s-conv=2668,vit-s-patch=4037``)."""
    if text is None or text == "":
        return {}
    out: dict[str, float] = {}
    for item in str(text).split(","):
        model, sep, value = item.strip().rpartition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if rate <= 0 or (sep and not model.strip()):
            raise SrvError(f"--img-per-s {text!r}: {item.strip()!r} is not a rate > 0; give one "
                           f"figure (2668) or MODEL=RATE pairs (vit-s-conv=2668,vit-s-patch=4037)")
        if model:
            from reproduce.models import get_entry

            model = get_entry(model.strip()).name  # an unknown model: one line with the fix
        out[model] = rate
    return out


def _gpu_file(data: dict[str, Any]) -> bool:
    """An srv bench file measured on a GPU (its environment line names the device third)."""
    env = str(data.get("environment", "")).split(",")
    return len(env) > 2 and env[2].strip().lower() != "cpu"


def measured_throughput(model: str, r: Recipe, folders: Iterable[Path]) -> Throughput | None:
    """The ``srv bench`` GPU figure for ``model`` in the first of ``folders`` that has one, in
    the recipe's mode (compiled when it sets ``compile``, else eager): an engine + loader rate
    (``"engine"`` records of the ``timm`` / ``dali`` pipelines, the recipe's loader first) before
    a bare training step (``"results"`` or ``"bare"`` records); None when no file measures it."""
    mode = "compile" if getattr(r, "compile", False) else "eager"
    loaders = sorted(("timm", "dali"), key=lambda p: p != r.loader)
    for folder in folders:
        for path in sorted(Path(folder).glob("*.json")) if Path(folder).is_dir() else ():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict) or not _gpu_file(data):
                continue
            recs = [rec for rec in [*(data.get("engine") or ()), *(data.get("results") or ()),
                                    *(data.get("bare") or ())]
                    if isinstance(rec, dict) and rec.get("model") == model
                    and rec.get("mode") == mode and rec.get("img_per_s") and not rec.get("error")]
            env = [x.strip() for x in str(data["environment"]).split(",")]
            for pipeline in (*loaders, None):
                for rec in recs:
                    if rec.get("pipeline") == pipeline or (pipeline is None
                                                           and "pipeline" not in rec):
                        what = (f"srv bench --pipelines {pipeline}" if pipeline else
                                "srv bench bare step")
                        return Throughput(float(rec["img_per_s"]),
                                          f"{what}, {path.name}: {env[2]}, {mode}, batch "
                                          f"{rec.get('batch')}, {rec.get('amp')}",
                                          "loader" if pipeline else "bare")
    return None


def _reference(model: str) -> str:
    """The measured model a model without a figure is scaled from: the catalogue's
    ``vit-<size>-conv`` for every conv-stem variant (conv-nobn, -norelu, -linear, -ln, xiao:
    their stems run at the conv-stem's speed, not patchify's, whatever their GFLOPs), else
    ``vit-<size>-patch``; :data:`ANCHOR_MODEL` outside the vit-* family."""
    from reproduce.models import get_entry

    entry = get_entry(model)
    parts = entry.name.split("-")
    if parts[0] != "vit" or len(parts) < 3:
        return ANCHOR_MODEL
    return f"vit-{parts[1]}-{'patch' if entry.stem.startswith('patch') else 'conv'}"


class GpuRates:
    """Per-GPU training img/s per model, labelled (see the module docstring): ``stated``
    (``--img-per-s``, :func:`parse_rates`) first, then srv bench figures in ``folders``, then
    the reference's measured rate x GFLOPs ratio, then (``anchor``) the docs/paper.md figure.
    SAM's recipes get half (two passes a step)."""

    def __init__(self, stated: dict[str, float] | None, folders: Iterable[Path],
                 anchor: bool = True) -> None:
        self.stated, self.folders, self.anchor = dict(stated or {}), list(folders), anchor
        self.cache: dict[tuple[str, str, bool], Throughput | None] = {}

    def _own(self, model: str, r: Recipe) -> Throughput | None:
        rate = self.stated.get(model, self.stated.get(""))
        if rate:
            return Throughput(rate, "--img-per-s", "stated")
        return measured_throughput(model, r, self.folders)

    def _find(self, model: str, r: Recipe) -> Throughput | None:
        found = self._own(model, r)
        if found is not None:
            return found
        ref = _reference(model)
        base = self._own(ref, r) if ref != model else None
        if base is None and not self.anchor:
            return None
        if base is None:
            ref = ANCHOR_MODEL
            base = self._own(ref, r) or Throughput(
                ANCHOR_IMG_PER_S, "docs/paper.md §4 anchor: H100, bf16, compiled", "anchor")
        from reproduce.models.flops import count

        ratio = count(ref).gflops / count(model).gflops
        kind = "scaled" if base.kind in ("bare", "anchor") else base.kind
        return Throughput(base.img_per_s * ratio, f"{ref}'s {base.img_per_s:,.0f} img/s ("
                          f"{base.source}) x GFLOPs ratio {ratio:.3f}", kind)

    def __call__(self, model: str, r: Recipe) -> Throughput | None:
        key = (model, "compile" if getattr(r, "compile", False) else "eager",
               str(r.opt).startswith("sam"))
        if key not in self.cache:
            found = self._find(model, r)
            self.cache[key] = found.halved_for_sam() if found and key[2] else found
        return self.cache[key]


# --- time from this machine's runs ---------------------------------------------------------------

#: recipe keys that do not change how long an update takes: runs that differ only in these are
#: "matching" runs for a time estimate (every other recipe value, and the model, must agree;
#: the epochs too: a short run's per-update time carries more of its start-up and evaluation)
TIME_FREE = frozenset({
    "seed", "lr", "lr_base_batch", "lr_scaling", "weight_decay", "wd_pos_cls", "sched",
    "sched_step", "warmup_epochs", "warmup_lr", "warmup_factor", "min_lr", "min_lr_factor",
    "smoothing", "opt_eps", "momentum", "sam_rho", "clip_grad", "data_path", "log",
    "spike_factor", "amp_init_scale", "amp_min_scale", "ema_warmup_copy", "num_classes"})
_RECIPE_KEYS = frozenset(f.name for f in fields(Recipe))


def speed_key(model: str, values: dict[str, Any]) -> tuple[Any, ...]:
    """What two runs must share for one's time per update to predict the other's: the model and
    every recipe value outside :data:`TIME_FREE` (``values``: a config.json or a recipe's
    ``to_dict()``; keys it lacks take the recipe's defaults)."""
    defaults = Recipe().to_dict()
    return (model, *sorted((k, json.dumps(values.get(k, defaults[k]), default=str))
                           for k in _RECIPE_KEYS - TIME_FREE))


def cpu_scale(r: Recipe) -> bool:
    """A run sized for a CPU (its data set held in memory, or the device pinned to cpu): its
    cost is minutes on this machine, not GPU-hours."""
    from reproduce.training.config import IN_MEMORY_DATASETS

    return r.device == "cpu" or r.dataset in IN_MEMORY_DATASETS


@dataclass(frozen=True)
class StepRate:
    """Wall seconds per update of a run, and where the figure comes from."""

    seconds: float
    runs: int  # matching finished runs it is the median of; 0: the assumed rate
    source: str
    key: tuple[Any, ...] = ()  # the speed key of those runs (:func:`speed_key`)


class StepTimes:
    """The measured seconds per update of the finished runs of a runs folder, by
    :func:`speed_key` (``result.json``'s ``wall_time_s`` over the updates trained in that
    session, so a resumed run counts only what it trained after resuming)."""

    def __init__(self, runs_root: Path | str) -> None:
        from reproduce.training.runs import read_json

        self.root = Path(runs_root)
        self.by_key: dict[tuple[Any, ...], list[float]] = {}
        for path in sorted(self.root.glob("*/result.json")):
            res = read_json(path) or {}
            cfg = read_json(path.parent / "config.json") or {}
            env = read_json(path.parent / "env.json") or {}
            wall, steps = res.get("wall_time_s"), res.get("steps")
            if not (isinstance(wall, int | float) and isinstance(steps, int) and steps > 0
                    and cfg.get("model")):
                continue
            per_epoch = (cfg.get("derived") or {}).get("steps_per_epoch") or 0
            steps -= int(env.get("resumed_from_epoch") or 0) * int(per_epoch)
            if steps > 0:
                key = speed_key(str(cfg["model"]), cfg)
                self.by_key.setdefault(key, []).append(float(wall) / steps)

    def per_step(self, model: str, r: Recipe) -> StepRate | None:
        """Seconds per update of a run of ``model`` with recipe ``r``: the median of the
        matching runs, else the assumed CPU-scale rate for a vit-mini model on an in-memory data
        set, else None."""
        key = speed_key(model, r.to_dict())
        found = self.by_key.get(key)
        if found:
            n = len(found)
            return StepRate(statistics.median(found), n,
                            f"extrapolated from {n} matching run{'s' if n != 1 else ''} in "
                            f"{self.root}", key)
        if model.startswith("vit-mini-") and cpu_scale(r) and r.dataset != "synthetic":
            twice = 2.0 if str(r.opt).startswith("sam") else 1.0  # two passes a step
            return StepRate(ASSUMED_S_PER_STEP * twice * r.batch_size / 128, 0,
                            f"assumed rate: {ASSUMED_S_PER_STEP} s per update of 128 images"
                            + (", x2 for SAM" if twice > 1 else "")
                            + ", a vit-mini cell two at a time on the 2-core AMD EPYC; no "
                              f"matching finished run in {self.root}")
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

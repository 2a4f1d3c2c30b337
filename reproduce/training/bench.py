"""Training-throughput benchmark: srv models next to a plain timm model, measured in one run.

**The bare model step** (``bench_model``): each model trains on synthetic data that is already on
the device (no data loading), with AdamW (fused on CUDA), label-smoothing cross-entropy and the
chosen AMP mode, in eager mode and under ``torch.compile``, with the engine's settings: its
device defaults (cuDNN autotuning and TF32 on CUDA, :func:`reproduce.training.engine.
configure_device`), a ``GradScaler`` under fp16, the same memory format and ``torch.compile`` of
the whole model. The timing follows timm's
``benchmark.py``: warm-up steps, then timed steps between device synchronisations. Results are
reported as img/s and as a ratio to the baseline (the first model) in the same mode and run, so
numbers from different machines are never compared directly.

**The engine** (``bench_engine``): the same model trained by ``srv train``'s engine (the DeiT
recipe: Mixup/CutMix, soft-target loss, drop path, EMA, gradient-norm and update-ratio
statistics, the schedule, the non-finite-step guard) fed by one of three pipelines:

* ``engine``: synthetic batches already on the device (the engine's own cost);
* ``timm``: a JPEG folder through timm's DataLoader path with the full DeiT transform;
* ``dali``: the same folder through the DALI pipeline (:mod:`reproduce.data.dali`).

Each is timed in **steady state**: one untimed epoch warms everything up (compilation, cuDNN
autotuning, the timm loader's persistent workers, the file cache, DALI's decoders), then the timed
epoch is clocked from the moment its first batch is in hand. What an epoch start costs before
that (the DALI loader builds its training pipeline per epoch, docs/dali.md; timm's workers
refill their prefetch queue) is reported apart as ``first_batch_s``, and ``epoch_img_per_s``
is the whole epoch with it. Each is reported as img/s, the share of time spent waiting for
data, and a ratio to the bare model step of the same model and mode measured in the same run.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["BenchResult", "EngineResult", "bench_model", "bench_engine", "run_bench",
           "run_engine_bench", "PIPELINES"]

#: what can feed the engine in a benchmark (``bare`` is the model step alone)
PIPELINES = ("bare", "engine", "timm", "dali")


@dataclass
class BenchResult:
    """One model in one mode."""

    model: str
    mode: str  # eager | compile
    batch: int
    amp: str
    img_per_s: float
    step_ms: float
    peak_mem_gib: float | None
    compile_s: float | None
    ratio: float | None = None  # img/s relative to the baseline in the same mode


def _build(name: str, img_size: int, num_classes: int) -> Any:
    import timm

    if name.startswith("timm:"):
        return timm.create_model(name.removeprefix("timm:"), pretrained=False,
                                 num_classes=num_classes, img_size=img_size)
    from reproduce.models import create

    return create(name, num_classes=num_classes, img_size=img_size)


def bench_model(name: str, mode: str, batch: int, img_size: int, amp: str, steps: int,
                warmup: int, device: Any, channels_last: bool = False) -> BenchResult:
    """Time ``steps`` training steps of one model after ``warmup`` steps."""
    import torch
    from torch import nn

    from reproduce.training.device import configure_device

    configure_device(device)  # as the engine: cuDNN autotuning, TF32
    torch.manual_seed(0)
    model = _build(name, img_size, 1000).to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=fused)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(batch, 3, img_size, img_size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch,), device=device)
    from reproduce.training.device import compile_model  # resets dynamo: many models, one process

    net = compile_model(model) if mode == "compile" else model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    # the engine's fp16 runs scale the loss (DeiT's NativeScaler); bf16 and fp32 do not
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(net(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    step()  # the first step compiles
    sync()
    compile_s = time.perf_counter() - t0 if mode == "compile" else None
    for _ in range(max(warmup - 1, 0)):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return BenchResult(name, mode, batch, amp, batch * steps / elapsed, 1000 * elapsed / steps,
                       peak, compile_s)


def run_bench(models: list[str], modes: list[str], batch: int, img_size: int, amp: str,
              steps: int, warmup: int, device_name: str = "auto",
              channels_last: bool = False) -> list[BenchResult]:
    """Benchmark every model in every mode; ratios are to ``models[0]`` in the same mode."""
    import torch

    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    results = []
    for mode in modes:
        base = None
        for name in models:
            res = bench_model(name, mode, batch, img_size, amp, steps, warmup, device,
                              channels_last)
            base = base or res.img_per_s
            res.ratio = res.img_per_s / base
            results.append(res)
    return results


@dataclass
class EngineResult:
    """The engine on one pipeline, next to the bare model step of the same model and mode."""

    model: str
    mode: str
    pipeline: str  # engine | timm | dali
    batch: int
    amp: str
    img_per_s: float  # steady state: from the timed epoch's first batch in hand to its end
    data_wait_frac: float  # share of that time spent waiting for batches
    steps: int
    ratio_to_bare: float | None = None
    error: str | None = None  # the pipeline failed: why (the other pipelines still ran)
    first_batch_s: float | None = None  # the epoch start until the first batch is in hand
    epoch_img_per_s: float | None = None  # the whole timed epoch, its start included
    #: share of the steady-state time the training thread spent in the trackers' calls (None
    #: without trackers); a writer's own background thread is not in it (the ratio to the
    #: run without trackers covers that, within the machine's noise)
    tracking_frac: float | None = None


class DeviceBatches:
    """A train loader of synthetic batches already on the device: the engine's own cost."""

    def __init__(self, batch: int, img_size: int, num_classes: int, steps: int,
                 device: Any) -> None:
        import torch

        g = torch.Generator(device="cpu").manual_seed(0)
        self.x = torch.randn(batch, 3, img_size, img_size, generator=g).to(device)
        self.y = torch.randint(0, num_classes, (batch,), generator=g).to(device)
        self.steps = steps

    def __len__(self) -> int:
        return self.steps

    def set_epoch(self, epoch: int) -> None:
        pass

    def __iter__(self) -> Any:
        for _ in range(self.steps):
            yield self.x, self.y


def bench_engine(name: str, mode: str, pipeline: str, batch: int, img_size: int, amp: str,
                 steps: int, jpeg_folder: Any = None, workers: int = 8,
                 device_name: str = "auto", channels_last: bool = False,
                 log: str = "none") -> EngineResult:
    """Time the engine's training epochs on ``pipeline``: one epoch to warm up (compilation,
    cuDNN autotuning, loader workers, decoders), then one timed epoch (``steps`` steps for
    ``engine``; a pass over the folder for ``timm`` / ``dali``), clocked in steady state from its
    first batch in hand (the epoch's start-up is ``first_batch_s``), with the trackers ``log``
    names writing to the temporary run folder as in ``srv train``."""
    import tempfile
    from pathlib import Path

    import torch

    from reproduce.training.config import resolve_config
    from reproduce.training.engine import Trainer
    from reproduce.training.runs import RunDir
    from reproduce.training.tracking import open_tracking
    from reproduce.utils.distributed import init_distributed
    from reproduce.utils.reporter import Reporter

    overrides: dict[str, Any] = dict(batch_size=batch, img_size=img_size, amp=amp,
                                     compile=mode == "compile", epochs=100, warmup_epochs=1.0,
                                     aug_repeats=0, num_workers=workers, device=device_name,
                                     channels_last=channels_last)
    if pipeline == "engine":
        overrides.update(dataset="synthetic", num_classes=1000, train_subset=batch,
                         val_subset=batch)
    else:
        overrides.update(dataset="imagefolder", data_path=str(jpeg_folder), loader=pipeline)
    cfg = resolve_config(name, "deit", overrides)
    info = init_distributed(cfg.recipe.device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, RunDir(Path(tmp) / "run"), info, Reporter(enabled=False))
        if pipeline == "engine":
            trainer.loop.loader = DeviceBatches(batch, img_size, trainer.data.num_classes,
                                                steps, info.device)
            trainer.loop.steps_per_epoch = steps
        tracker = trainer.loop.tracker = open_tracking(log, trainer.run.path, cfg.to_dict(), 0)

        def sync() -> None:
            if info.device.type == "cuda":
                torch.cuda.synchronize(info.device)

        trainer.train_epoch()  # warm-up: compilation, autotuning, workers, file cache
        trainer.epoch += 1
        # the first batch in hand: the epoch loop calls its step on it (after Mixup)
        first: list[float] = []
        step_fn = trainer.loop.step_fn

        def clocked_step(x: Any, y: Any, **kwargs: Any) -> Any:
            if not first:
                sync()
                first.append(time.perf_counter())
            return step_fn(x, y, **kwargs)

        trainer.loop.step_fn = clocked_step
        sync()
        tracked0 = tracker.seconds
        t0 = time.perf_counter()
        stats = trainer.train_epoch()
        sync()
        t1 = time.perf_counter()
        tracked = tracker.seconds - tracked0
        tracker.close()
    start = first[0] - t0 if first else 0.0
    steady = t1 - (first[0] if first else t0)
    # the first batch's wait is the start-up; what is left is the steady-state waiting
    waited = max(stats.data_time - start, 0.0)
    label = f"{pipeline}+{log}" if log != "none" else pipeline
    return EngineResult(name, mode, label, batch, amp, stats.images / steady,
                        waited / steady, stats.steps + stats.skipped_steps,
                        first_batch_s=start, epoch_img_per_s=stats.images / (t1 - t0),
                        tracking_frac=tracked / steady if log != "none" else None)


def run_engine_bench(models: list[str], modes: list[str], pipelines: list[str], batch: int,
                     img_size: int, amp: str, steps: int, warmup: int, jpeg_folder: Any = None,
                     workers: int = 8, device_name: str = "auto", channels_last: bool = False,
                     log: str = "none") -> tuple[list[BenchResult], list[EngineResult]]:
    """For every model and mode: the bare model step, then the engine on each pipeline, each
    as a ratio to that bare step (same run, same device); with ``log``, each pipeline again
    with those trackers logging (``engine+tensorboard``: the cost of tracking)."""
    bare = run_bench(models, modes, batch, img_size, amp, steps, warmup, device_name,
                     channels_last)
    by_key = {(r.model, r.mode): r.img_per_s for r in bare}
    engine = []
    for mode in modes:
        for name in models:
            if name.startswith("timm:"):
                continue  # the engine trains catalogue models
            for pipeline in pipelines:
                if pipeline == "bare":
                    continue
                for trackers in dict.fromkeys(["none", log]):
                    try:
                        res = bench_engine(name, mode, pipeline, batch, img_size, amp, steps,
                                           jpeg_folder, workers, device_name, channels_last,
                                           trackers)
                    except Exception as err:  # one broken pipeline must not lose the others
                        from reproduce.training.resume import summarize

                        label = f"{pipeline}+{trackers}" if trackers != "none" else pipeline
                        engine.append(EngineResult(name, mode, label, batch, amp, 0.0, 0.0, 0,
                                                   error=summarize(err, 300)))
                        continue
                    res.ratio_to_bare = res.img_per_s / by_key[(name, mode)]
                    engine.append(res)
    return bare, engine


def environment_line() -> str:
    import timm
    import torch

    from reproduce.training.runs import cpu_model

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return (f"torch {torch.__version__}, timm {timm.__version__}, {dev}, "
            f"{torch.get_num_threads()} CPU threads of {cpu_model()}")


def as_dicts(results: list[BenchResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]

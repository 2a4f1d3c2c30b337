"""Training-throughput benchmark: srv models next to a plain timm model, measured in one run.

Each model trains on synthetic data that is already on the device (no data loading), with
AdamW (fused on CUDA), label-smoothing cross-entropy and the chosen AMP mode, in eager mode and
under ``torch.compile``. The timing follows timm's ``benchmark.py``: warm-up steps, then timed
steps between device synchronisations. Results are reported as img/s and as a ratio to the
baseline (the first model) in the same mode and run, so numbers from different machines are
never compared directly.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["BenchResult", "bench_model", "run_bench"]


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
    from .models import create

    return create(name, num_classes=num_classes, img_size=img_size)


def bench_model(name: str, mode: str, batch: int, img_size: int, amp: str, steps: int,
                warmup: int, device: Any) -> BenchResult:
    """Time ``steps`` training steps of one model after ``warmup`` steps."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = _build(name, img_size, 1000).to(device).train()
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=fused)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    net = torch.compile(model) if mode == "compile" else model
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(net(x), y)
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
              steps: int, warmup: int, device_name: str = "auto") -> list[BenchResult]:
    """Benchmark every model in every mode; ratios are to ``models[0]`` in the same mode."""
    import torch

    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results = []
    for mode in modes:
        base = None
        for name in models:
            res = bench_model(name, mode, batch, img_size, amp, steps, warmup, device)
            base = base or res.img_per_s
            res.ratio = res.img_per_s / base
            results.append(res)
    return results


def environment_line() -> str:
    import platform

    import timm
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor()
    return (f"torch {torch.__version__}, timm {timm.__version__}, {dev or 'cpu'}, "
            f"{torch.get_num_threads()} CPU threads")


def as_dicts(results: list[BenchResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]

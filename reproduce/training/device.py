"""The device's process-wide set-up for a run: cuDNN autotuning and TF32 (timm's ``train.py``)
or deterministic kernels, the cuBLAS workspace they need, the AMP refusals torch would pass
over, and ``torch.compile`` with a fresh dynamo. The engine calls these before the loop starts.

May import: :mod:`reproduce.errors` and torch only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from reproduce.errors import SrvError

__all__ = ["check_amp", "compile_model", "configure_device", "cublas_workspace",
           "device_flags_kept", "native_bf16"]

CUBLAS_WORKSPACE = ":4096:8"  # torch's "Reproducibility" notes: deterministic cuBLAS workspaces


def cublas_workspace(deterministic: bool) -> None:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` for a deterministic run, before the process's first
    cuBLAS handle: cuBLAS reads it when a handle is made, and torch keeps its handles for the
    process, so set later it has no effect (while it silences torch's own check). Refuses when
    CUDA is already in use in this process without it (e.g. an earlier grid cell in-process)."""
    if not deterministic or os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
        return
    if torch.cuda.is_initialized():
        raise SrvError(f"--deterministic needs CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} set "
                       f"before this process's first cuBLAS call, and CUDA is already in use "
                       f"here: export CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE}, or train "
                       f"the run in a process of its own (srv train, or srv ablate --jobs 2)")
    os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE


@contextmanager
def device_flags_kept() -> Iterator[None]:
    """Put torch's process-wide flags that :func:`configure_device` sets back as they were on
    exit: a ``deterministic`` run must not leave the next run of the same process (grid cells
    in one process, ``srv bench``) deterministic, nor a fast one leave TF32 on."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32, matmul.allow_tf32)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        (cudnn.benchmark, cudnn.deterministic, cudnn.allow_tf32,
         matmul.allow_tf32) = saved[2:]


def configure_device(device: torch.device, deterministic: bool = False) -> None:
    """Fast defaults on CUDA: cuDNN autotuning (fixed input shapes) and TF32 for the fp32
    matmuls and convolutions that remain under AMP (as timm's train.py allows).

    ``deterministic``: torch's reproducibility recipe instead (docs "Reproducibility"):
    ``torch.use_deterministic_algorithms(True)``, cuDNN autotuning and TF32 off, and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (:func:`cublas_workspace`; the engine sets it before
    the process touches CUDA). Slower, and it makes a resumed GPU run bitwise equal to an
    uninterrupted one; without it resume on GPU is statistically, not bitwise, equal
    (autotuned kernels and atomics vary run to run). These flags are process-wide: the engine
    restores them after a run (:func:`device_flags_kept`)."""
    if deterministic:
        if device.type == "cuda":
            cublas_workspace(True)
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def native_bf16(device: torch.device) -> bool:
    """Whether the GPU computes in bf16 natively: compute capability 8.0 or newer (A100, H100),
    or ROCm. Not ``torch.cuda.is_bf16_supported()``: by default that also says True where bf16
    is only emulated (V100, T4), which runs, several times slower than fp16."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device)[0] >= 8


def check_amp(amp: str, device: torch.device) -> None:
    """Refuse bf16 on a GPU without native bf16 (e.g. V100, T4): emulated bf16 runs at a
    fraction of fp16's speed, and a torch that emulates nothing would only warn and run fp32
    while the run records ``amp = bf16``."""
    if amp == "bf16" and device.type == "cuda" and not native_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise SrvError(f"amp=bf16 needs a GPU with native bf16 (compute capability 8.0 or newer) "
                       f"and this one is {major}.{minor}: use --set amp=fp16 (with its loss "
                       f"scaler)")


def compile_model(net: nn.Module, **options: Any) -> nn.Module:
    """``torch.compile(net)`` after ``torch._dynamo.reset()``: every model a process compiles
    (grid cells run one after another, ``srv bench``'s models) would otherwise count against
    dynamo's recompile limit (``torch._dynamo.config.recompile_limit``, 8) for the same
    ``forward`` code, and past it dynamo falls back to eager with only a log line."""
    torch._dynamo.reset()
    return torch.compile(net, **options)  # type: ignore[return-value]

"""A per-device memory estimate for ``--dry-run``: weights, gradients, optimizer state, EMA and
the activations autograd keeps for the backward pass of one micro-batch.

It is an estimate, not a measurement: activations are the bytes of the tensors autograd saves
for backward (``torch.autograd.graph.saved_tensors_hooks``) in a forward on the ``meta`` device
(shapes only, no memory, no time), per image (the difference between batches of 2 and 1, so
weights saved by the matmuls cancel out), in fp32; AMP keeps most of them in 16 bits (up to
about half). The attention kernel on ``meta`` is the math path, which saves the attention
matrix that fused GPU kernels (FlashAttention) recompute, so ViT activations are an upper
bound. Not counted: the CUDA context and caching-allocator slack (often 1-3 GB more), the
input batch, and temporaries of the optimizer step.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["activation_bytes_per_image", "memory_estimate", "describe_memory"]


def _saved_bytes(model: nn.Module, batch: int, img_size: int) -> int:
    kept: list[torch.Tensor] = []  # held so that ids stay unique while counting
    seen: set[int] = set()
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if id(t) not in seen:
            seen.add(id(t))
            kept.append(t)
            total += t.numel() * t.element_size()
        return t

    x = torch.empty(batch, 3, img_size, img_size, device="meta")
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return total


def activation_bytes_per_image(model: nn.Module, img_size: int) -> int:
    """Bytes autograd saves per training image (fp32), from ``meta``-device forwards."""
    was_training = model.training
    model.train()
    try:
        return _saved_bytes(model, 2, img_size) - _saved_bytes(model, 1, img_size)
    finally:
        model.train(was_training)


def memory_estimate(model: nn.Module, optimizer: torch.optim.Optimizer, micro_batch: int,
                    img_size: int, ema: bool, sam: bool) -> dict[str, Any]:
    """GiB per device: ``weights``, ``grads``, ``optimizer`` (Adam-type: 2 moments, SGD with
    momentum: 1), ``ema``, ``sam`` (SAM's saved weights), ``activations`` and ``total``."""
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    name = type(optimizer).__name__.lower()
    states = 2 if "adam" in name or "lamb" in name else 1 if optimizer.defaults.get("momentum") \
        else 0
    gib = 1024**3
    parts = {"weights": 4 * n / gib, "grads": 4 * n / gib, "optimizer": 4 * n * states / gib,
             "ema": 4 * n / gib if ema else 0.0, "sam": 4 * n / gib if sam else 0.0,
             "activations": activation_bytes_per_image(model, img_size) * micro_batch / gib}
    return {**{k: round(v, 3) for k, v in parts.items()},
            "total": round(sum(parts.values()), 2), "micro_batch": micro_batch}


def describe_memory(est: dict[str, Any], amp: str) -> str:
    """The dry run's line for :func:`memory_estimate`."""
    fixed = est["total"] - est["activations"]
    note = ("activations in fp32" if amp == "off" else
            f"activations counted in fp32; {amp} keeps most in 16 bits, up to about half")
    return (f"memory per device (an estimate): about {est['total']:.2f} GiB = weights, grads, "
            f"optimizer, EMA {fixed:.2f} + activations {est['activations']:.2f} for a "
            f"micro-batch of {est['micro_batch']} ({note}; without the CUDA context, often "
            f"1-3 GiB more): raise --accum-steps if it does not fit")

"""Sharpness-Aware Minimization (Foret et al. 2021, arXiv 2010.01412) as two engine hooks.

timm has no SAM optimizer, so srv implements its one idea: take the gradient at
``w + rho * g / ||g||`` and apply it, with any base optimizer, at ``w``. The engine calls
:func:`perturb` after the first backward, recomputes the loss on the same batch, then
:func:`restore` before ``optimizer.step()``. The paper studies optimizer sensitivity of ViTs
(AdamW vs SGD, and SAM is discussed), so ``opt = "sam"`` (SGD base) and ``"sam-adamw"`` exist.
"""

from __future__ import annotations

import torch

__all__ = ["perturb", "restore", "base_optimizer"]


def base_optimizer(opt: str) -> str | None:
    """The base optimizer of a SAM name (``sam`` -> ``sgd``, ``sam-adamw`` -> ``adamw``)."""
    if opt == "sam":
        return "sgd"
    if opt.startswith("sam-"):
        return opt.removeprefix("sam-")
    return None


@torch.no_grad()
def perturb(params: list[torch.nn.Parameter], rho: float,
            skip: torch.Tensor | None = None) -> list[torch.Tensor | None]:
    """Move each parameter by ``rho * g / ||g||`` (global norm); return the weights before the
    move, which :func:`restore` copies back (exact, as the reference implementation
    davda54/sam restores ``old_p``; ``w + e - e`` is not ``w`` in floating point).

    ``skip`` (a device flag: the first pass was not finite) makes every move exactly zero,
    decided on the device, so the weights are never moved along a non-finite gradient and the
    host does not wait for the flag."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = rho / (norm + 1e-12)
    moves: list[torch.Tensor | None] = []
    for p in params:
        if p.grad is None:
            moves.append(None)
            continue
        e = p.grad * scale.to(p.grad.dtype)
        if skip is not None:
            e = torch.where(skip, torch.zeros((), dtype=e.dtype, device=e.device), e)
        moves.append(p.detach().clone())
        p.add_(e)
    return moves


@torch.no_grad()
def restore(params: list[torch.nn.Parameter], moves: list[torch.Tensor | None]) -> None:
    """Undo :func:`perturb`: the weights it saved, copied back."""
    for p, old in zip(params, moves, strict=True):
        if old is not None:
            p.copy_(old)

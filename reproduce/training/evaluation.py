"""Evaluation: top-1 / top-5 and the loss over a sharded val set, every image counted once.

The val set is sharded over ranks without padding and the counts are summed over ranks, so the
figures are the same whatever the world size. The engine evaluates the *unwrapped* model (never
DDP): DDP's forward may broadcast buffers (a collective), and a rank whose val shard is empty
makes no forward, so the other ranks would wait for it.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.data.build import build_val_loader
from reproduce.data.datasets import Datasets
from reproduce.recipes.recipe import Recipe
from reproduce.training.step import autocast
from reproduce.utils.distributed import DistInfo, all_reduce_sum

__all__ = ["evaluate", "val_loader"]


def val_loader(data: Datasets, r: Recipe, info: DistInfo) -> Any:
    """Val images sharded over ranks without padding (each image counted exactly once)."""
    return build_val_loader(data.val, r, info)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, info: DistInfo, r: Recipe | None = None,
             channels_last: bool = False) -> dict[str, float]:
    """Top-1 / top-5 (%), mean cross-entropy and the number of images, summed over ranks.

    ``loader`` yields ``(x, y)`` batches (moved to the device here if they are not there yet);
    counts accumulate on the device and are read back once. ``model`` must not be wrapped in
    DDP (see the module's note): the only collective here is the final sum.
    """
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=info.device)  # top1, top5, loss
    n = 0
    ctx = autocast(r, info.device) if r is not None else nullcontext()
    for x, y, *_ in loader:  # imagefolder items carry a bad-file index
        x = x.to(info.device, non_blocking=True)
        y = y.to(info.device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ctx:
            out = model(x)
        out = out.float()
        top = out.topk(min(5, out.shape[1]), dim=1).indices
        hits = top.eq(y[:, None])
        sums += torch.stack([hits[:, 0].sum().double(), hits.any(dim=1).sum().double(),
                             F.cross_entropy(out, y, reduction="sum").double()])
        n += y.numel()
    correct1, correct5, loss_sum, total = all_reduce_sum([*sums.tolist(), n], info)
    total = max(total, 1)
    return {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total,
            "loss": loss_sum / total, "n": int(total)}

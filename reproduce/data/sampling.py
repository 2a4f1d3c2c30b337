"""Which training samples a rank sees, in which order, in each epoch: one answer for every
input pipeline (timm's DataLoader and DALI alike), so repeated augmentation and resume mean the
same thing whichever pipeline feeds the model.

* Under DDP with ``aug_repeats > 0``: timm's ``RepeatAugSampler`` (DeiT's RASampler: each image
  repeated ``aug_repeats`` times, the repeats spread over ranks, ``len(data) // 256 * 256 /
  world`` samples per rank). As in DeiT, its shuffle is seeded by the epoch alone, not the run's
  seed.
* Otherwise: torch's ``DistributedSampler`` (shuffled with ``seed + epoch``; one process is the
  world-size-1 case), without padding surprises: the engine drops the last partial batch.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DistributedSampler, Sampler

__all__ = ["train_sampler", "epoch_indices", "shard_indices"]


def train_sampler(n: int, seed: int, rank: int = 0, world: int = 1,
                  aug_repeats: int = 0) -> Sampler[int]:
    """The training sampler of a data set of ``n`` items (call ``set_epoch`` before iterating).

    Repeated augmentation acts only when ``world > 1``, as in DeiT.
    """
    items: Any = range(n)
    if aug_repeats and world > 1:
        from timm.data.distributed_sampler import RepeatAugSampler

        return RepeatAugSampler(items, num_replicas=world, rank=rank, num_repeats=aug_repeats)
    return DistributedSampler(items, num_replicas=world, rank=rank, shuffle=True, seed=seed)


def epoch_indices(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                  aug_repeats: int = 0) -> list[int]:
    """The data-set indices rank ``rank`` trains on in ``epoch``, in order."""
    sampler = train_sampler(n, seed, rank, world, aug_repeats)
    sampler.set_epoch(epoch)  # type: ignore[attr-defined]
    return list(sampler)


def shard_indices(n: int, rank: int = 0, world: int = 1) -> list[int]:
    """Evaluation shard: ``rank, rank + world, ...``, every item on exactly one rank, no
    padding, so counts summed over ranks are exact at any world size."""
    return list(range(rank, n, world))

"""Distributed set-up from ``torchrun`` environment variables (RANK, WORLD_SIZE, LOCAL_RANK).

srv never takes ``--local-rank``: torchrun (or submitit/srun, which set the same variables) is the
launcher. NCCL on CUDA, gloo on CPU.

Timeouts: a collective of the training loop waits :data:`TIMEOUT` (10 minutes, torch's NCCL
default) for a missing rank, then fails (NCCL's watchdog aborts the communicator, gloo raises),
so a rank that hangs or died without its launcher noticing costs minutes, not half an hour. The
one wait that is long by design, the other ranks waiting for local rank 0's decode check of a
folder (:mod:`reproduce.data.dali.files`), uses :func:`long_barrier` (:data:`LONG_TIMEOUT`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "cuda_index", "init_distributed", "all_reduce_sum", "broadcast_from_main",
           "barrier", "long_barrier", "cleanup", "TIMEOUT", "LONG_TIMEOUT"]

#: how long a collective waits for a missing rank before the run fails
TIMEOUT = timedelta(minutes=10)
#: how long :func:`long_barrier` waits (a first decode check of ImageNet on a network file
#: system can take half an hour)
LONG_TIMEOUT = timedelta(hours=3)

_long_group: Any = None  # the gloo group of long_barrier, made on first use


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def cuda_index(local_rank: int, visible: int) -> int:
    """The CUDA device of a process with ``local_rank`` that sees ``visible`` devices: the only
    one when it sees one (SLURM ``--gpus-per-task`` / gpu-bind and submitit leave each task one
    GPU, which CUDA numbers 0 whatever the task's local rank), else its local rank (torchrun's
    convention: a node's processes all see the node's GPUs)."""
    if visible == 1:
        return 0
    if not 0 <= local_rank < visible:
        from reproduce.errors import SrvError

        shown = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise SrvError(f"local rank {local_rank} but this process sees {visible} GPUs"
                       + (f" (CUDA_VISIBLE_DEVICES={shown})" if shown is not None else "")
                       + ": launch at most one process per visible GPU on a node, or give "
                         "each process one GPU of its own")
    return local_rank


def _pick_device(want: str, local_rank: int) -> torch.device:
    if want == "cuda" or (want == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from reproduce.errors import SrvError

            raise SrvError("device 'cuda' asked for but no GPU is visible: use --set device=cpu")
        index = cuda_index(local_rank, torch.cuda.device_count())
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def init_distributed(device: str = "auto", timeout: timedelta | None = None) -> DistInfo:
    """Join the process group when launched by torchrun; a single process otherwise.
    Collectives time out after ``timeout`` (default :data:`TIMEOUT`)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timeout or TIMEOUT)
    return DistInfo(rank, world, local_rank, dev)


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum floats over all ranks (identity on one process)."""
    if not info.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """True on every rank when any rank says True (e.g. a non-finite loss on one rank)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_from_main(tensors: list[torch.Tensor], info: DistInfo) -> None:
    """Overwrite ``tensors`` on every rank with rank 0's values (one broadcast per dtype)."""
    if not info.distributed or not tensors:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        dist.broadcast(flat, src=0)
        offset = 0
        with torch.no_grad():
            for t in group:
                t.copy_(flat[offset:offset + t.numel()].view_as(t))
                offset += t.numel()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def long_barrier(info: DistInfo) -> None:
    """A barrier that waits up to :data:`LONG_TIMEOUT`, not the training loop's
    :data:`TIMEOUT`: a CPU barrier on a gloo group of its own (made on first use; every rank
    must call it, as any barrier), for waits that are long by design."""
    global _long_group
    if not info.distributed:
        return
    if _long_group is None:
        _long_group = dist.new_group(backend="gloo", timeout=LONG_TIMEOUT)
    dist.barrier(group=_long_group)


def cleanup(failed: bool = False) -> None:
    """Leave the process group. After a failure under NCCL it is aborted, not destroyed:
    ``destroy_process_group`` waits for the queued kernels, and a collective that the other
    ranks never join would keep this rank from exiting (its launcher, torchrun or srun with
    ``--kill-on-bad-exit``, then stops the others)."""
    global _long_group
    _long_group = None
    if not dist.is_initialized():
        return
    if failed and dist.get_backend() == "nccl":
        abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
        if abort is not None:
            try:
                abort()
            except Exception:  # noqa: BLE001 - the watchdog may have aborted it already
                pass
            return
    dist.destroy_process_group()

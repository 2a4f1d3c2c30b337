"""Timing an epoch: img/s and the part of the epoch the device waited for the host (data).

A collaborator of the epoch loop (:class:`reproduce.training.loop.EpochLoop`): it marks each
batch's arrival and each step's end; on CUDA the marks are CUDA events on the GPU's stream.

May import: torch only.
"""

from __future__ import annotations

import time
from typing import Any

import torch

__all__ = ["EpochClock", "HostEvent"]


class HostEvent:
    """``torch.cuda.Event``'s timing interface on the host clock (``time.perf_counter``)."""

    def __init__(self) -> None:
        self.t = 0.0

    def record(self) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: HostEvent) -> float:
        """Milliseconds from this event to ``end``."""
        return 1000.0 * (end.t - self.t)


class EpochClock:
    """An epoch's time and the part of it the device waited for the host (mostly for data).

    Two events per step: *ready* when the batch has arrived (recorded before the step's work is
    queued) and *done* after it. On CUDA they are CUDA events, timed on the GPU's stream, so the
    gap from one step's *done* to the next step's *ready* is how long the GPU sat idle waiting
    for the host (data loading, host overhead): the data-wait figure means what the metrics
    table says, and the host's waits at the sync points do not land in it. On the CPU they are
    host timestamps (:class:`HostEvent`), which is the same thing there. Events are read at the
    existing sync points (:meth:`settle` after a flush of the step window) and at the end.
    """

    def __init__(self, device: torch.device, event: Any = None) -> None:
        self.make = event or (
            (lambda: torch.cuda.Event(enable_timing=True)) if device.type == "cuda"
            else HostEvent)
        self.start = self._now()
        self.last_done = self.start
        self.pending: list[tuple[Any, Any]] = []
        self._ready: Any = None
        self.data_time = 0.0

    def _now(self) -> Any:
        event = self.make()
        event.record()
        return event

    def batch_ready(self) -> None:
        self._ready = self._now()

    def step_done(self) -> None:
        self.pending.append((self._ready, self._now()))

    def settle(self) -> None:
        """Account the steps recorded so far (call where the host has synced anyway)."""
        for ready, done in self.pending:
            done.synchronize()
            self.data_time += max(self.last_done.elapsed_time(ready), 0.0) / 1000.0
            self.last_done = done
        self.pending.clear()

    def finish(self) -> tuple[float, float]:
        """``(epoch seconds, data-wait seconds)``."""
        end = self._now()
        self.settle()
        end.synchronize()
        return self.start.elapsed_time(end) / 1000.0, self.data_time

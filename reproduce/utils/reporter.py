"""The console reporter of a training run: a rich bar on a terminal, plain periodic lines when
output is a file or a pipe.

Only rank 0 reports (the engine passes ``enabled=False`` elsewhere). No carriage returns end up
in SLURM logs: off a terminal, a line is printed at most every ``interval_s`` seconds.
"""

from __future__ import annotations

import time
from typing import Any

from reproduce.utils.console import is_terminal

__all__ = ["Reporter"]


class Reporter:
    """Reports step progress within an epoch and one summary line per epoch."""

    def __init__(self, enabled: bool = True, rich: bool | None = None,
                 interval_s: float = 30.0) -> None:
        self.enabled = enabled
        self.rich = is_terminal() if rich is None else rich
        self.interval_s = interval_s
        self._progress: Any = None
        self._task: Any = None
        self._last = 0.0
        self._info = ""
        if self.enabled and self.rich:
            from rich.console import Console

            self.console: Any = Console()
        else:
            self.console = None

    def line(self, text: str) -> None:
        if not self.enabled:
            return
        if self.console is not None:
            self.console.print(text, highlight=False)
        else:
            print(text, flush=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self._epoch, self._epochs, self._steps = epoch, epochs, steps
        self._last = time.monotonic()
        self._info = ""
        if not (self.enabled and self.rich):
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                  TimeRemainingColumn(), console=self.console, transient=True)
        self._progress.start()
        self._task = self._progress.add_task("train", total=steps, epoch=f"{epoch}/{epochs}",
                                             info="")

    def step(self, step: int, info: str | None = None) -> None:
        """Step ``step`` of the epoch is done (the host's counter: every step moves the bar);
        ``info`` (loss, lr) comes with the statistics' read-backs and stays until the next."""
        if not self.enabled:
            return
        if info is not None:
            self._info = info
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=self._info)
        elif time.monotonic() - self._last >= self.interval_s:
            self._last = time.monotonic()
            print(f"epoch {self._epoch}/{self._epochs} step {step}/{self._steps} {self._info}",
                  flush=True)

    def end_epoch(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

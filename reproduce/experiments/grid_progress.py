"""The view over a grid while it trains: a rich grid bar and one bar per running cell on a
terminal, plain lines otherwise."""

from __future__ import annotations

import threading
from typing import Any

from reproduce.experiments.cells import CellState
from reproduce.training.runs import read_json
from reproduce.utils.console import is_terminal, plural

__all__ = ["GridProgress"]


class GridProgress:
    """A rich view over the whole grid on a terminal (grid bar + one bar per running cell, polled
    from its ``status.json``); plain lines otherwise."""

    def __init__(self, rich: bool | None = None, poll_s: float = 1.0) -> None:
        self.rich = is_terminal() if rich is None else rich
        self.poll_s = poll_s
        self._progress: Any = None
        self._stop = threading.Event()
        self._cells: dict[int, tuple[Any, CellState]] = {}  # index -> (task, state)
        self._number: dict[int, int] = {}  # index -> its [k/n] in the lines
        self._thread: threading.Thread | None = None
        self._n = 0
        self._done = 0

    def begin(self, states: list[CellState], todo: list[int]) -> None:
        self._n = len(todo)
        skipped = len(states) - len(todo)
        if not self.rich:
            print(f"{plural(len(states), 'cell')}: {self._n} to train, {skipped} finished or "
                  f"skipped",
                  flush=True)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                  TimeElapsedColumn(), redirect_stdout=True,
                                  redirect_stderr=True)
        self._progress.start()
        self._grid = self._progress.add_task("grid", total=max(self._n, 1), info="")
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _say(self, line: str) -> bool:
        """Print a line above the live view (plain print off a terminal); True when live."""
        if self._progress is None:
            print(line, flush=True)
            return False
        self._progress.console.print(line, highlight=False)
        return True

    def start_cell(self, index: int, state: CellState) -> None:
        self._done += 1
        self._number[index] = self._done
        line = f"[{self._done}/{self._n}] {state.cell.describe()} ({state.status}) -> " \
               f"{state.run_dir}"
        if not self._say(line):
            return
        task = self._progress.add_task(state.cell.describe(), total=state.epochs,
                                       completed=state.info.get("epoch", 0), info="")
        self._cells[index] = (task, state)

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_s):
            for task, state in list(self._cells.values()):
                status = read_json(state.run_dir / "status.json") or {}
                if self._progress is not None and "epoch" in status:
                    self._progress.update(task, completed=status["epoch"],
                                          info=f"epoch {status['epoch']}/{state.epochs}")

    def end_cell(self, index: int, state: CellState, seconds: float) -> None:
        number = self._number.get(index, self._done)
        line = f"[{number}/{self._n}] {state.cell.describe()}: {state.status} " \
               f"{state.detail()} ({seconds:.0f} s)"
        if self._say(line):
            task, _ = self._cells.pop(index, (None, None))
            if task is not None:
                self._progress.remove_task(task)
            self._progress.update(self._grid, advance=1)

    def close(self) -> None:
        self._stop.set()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

"""Rich on a terminal, plain text otherwise: the one place that choice is made.

A terminal gets rich's tables and bars; a file, a pipe, a SLURM log or a test gets plain lines
(tabulate columns, no colour codes, no carriage returns), so logs stay greppable.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

__all__ = ["is_terminal", "plural", "print_table"]


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 epoch``, ``2 epochs``, ``1,024 cells`` (``words``: an irregular plural)."""
    return f"{n:,} {word if n == 1 else words or word + 's'}"


def is_terminal() -> bool:
    """True when stdout is a terminal (rich output), False for files, pipes and tests."""
    return sys.stdout.isatty()


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]],
                caption: str | None = None, tablefmt: str = "simple",
                markup: Callable[[list[str]], list[str]] | None = None) -> None:
    """A rich table on a terminal; otherwise the title, ``tabulate`` columns in ``tablefmt`` and
    the caption as a last line. ``markup`` rewrites a row for rich only (e.g. colours)."""
    if is_terminal():
        from rich.console import Console
        from rich.table import Table

        table = Table(*header, title=title, caption=caption)
        for row in rows:
            table.add_row(*(markup(list(row)) if markup is not None else row))
        Console().print(table)
        return
    from tabulate import tabulate

    print(title)
    print(tabulate(rows, headers=list(header), tablefmt=tablefmt, disable_numparse=True))
    if caption is not None:
        print(caption)

"""What ``srv ablate`` and ``srv claims --run`` print about a grid's cells: the plan (every cell
with its status), the cells that cannot run, and the summary after a pass."""

from __future__ import annotations

from reproduce.utils.console import plural

__all__ = ["print_plan", "refuse_unrunnable", "print_summary"]


def print_plan(grid, states: list, title: str) -> None:  # noqa: ANN001
    """Every cell with its status: a rich table on a terminal, plain columns otherwise."""
    from collections import Counter

    from reproduce.utils.console import print_table

    axes = [name for name, _ in states[0].cell.labels] if states else []
    random = {a.name for a in grid.axes if a.kind == "random"}

    def show(axis: str, label: str) -> str:  # a random sample shows its values
        return f"{label} {grid.axis(axis).show(label)}" if axis in random else label

    rows = [[str(i), *[show(a, label) for a, label in s.cell.labels], str(s.cell.seed),
             s.status, s.detail(), str(s.run_dir)] for i, s in enumerate(states, 1)]
    header = ["#", *axes, "seed", "status", "detail", "run dir"]
    counts = Counter(s.status for s in states)
    total = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    colors = {"done": "green", "diverged": "magenta", "failed": "red", "running": "cyan",
              "partial": "yellow", "pending": "dim"}

    def colour(row: list[str]) -> list[str]:  # the status in its colour (rich only)
        status = row[len(axes) + 2]
        row[len(axes) + 2] = f"[{colors.get(status, '')}]{status}[/]"
        return row

    print_table(title, header, rows, caption=f"{plural(len(states), 'cell')}: {total}",
                tablefmt="plain",
                markup=colour)


def refuse_unrunnable(unrunnable: list, grid, total: int) -> None:  # noqa: ANN001
    """List the cells that cannot run (stdout), then fail with one line."""
    from reproduce.errors import SrvError

    for state, reason in unrunnable:
        print(f"  cannot run: {state.cell.describe()}: {reason}")
    first = unrunnable[0][1]
    raise SrvError(f"{len(unrunnable)} of {total} cells of grid {grid.name!r} ({grid.preset}) "
                   f"cannot run, e.g. {first} (all listed above); fix the grid or the --set "
                   f"overrides")


def print_summary(summary, grid_name: str) -> None:  # noqa: ANN001
    """Counts per status, warnings, failures with their reasons and the retry hint."""
    counts = summary.counts()
    total = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    trained = sum(1 for a in summary.actions.values() if a == "trained")
    print(f"\ngrid {grid_name}: {plural(len(summary.states), 'cell')}: {total} ({trained} "
          f"trained in this pass, {summary.seconds:.0f} s)")
    for state, reason in summary.warnings:
        print(f"  warning: {state.cell.describe()} finished ({state.status}) but its launch "
              f"reported: {reason}")
    for state, reason in summary.failures:
        print(f"  failed: {state.cell.describe()}: {reason}  [{state.run_dir}]")
    if summary.failures:
        print(f"  rerun the failed cells with: srv ablate {grid_name} ... --retry-failed")
    if summary.stopped_early:
        print("  stopped early (--fail-fast / --max-failures); the other cells were not run")

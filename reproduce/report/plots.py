"""Plots of a grid (matplotlib, Agg: no display needed), saved as PNG next to its table.

* :func:`plot_curves`: train loss and val top-1 per epoch for every cell of a grid, one colour per
  cell (its axis values), one line per seed; with many lines, a panel per stem and a band per
  cell (mean +- sd over its seeds); a diverged run ends in a cross; legends outside the axes.
* :func:`plot_edf`: Xiao et al.'s stability view for ``lr-wd-edf``: the empirical distribution
  function of top-1 error over the random (lr, wd) samples, one curve per model (diverged runs
  count as 100% error).

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, so nothing
touches pyplot's global state or needs a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["MAX_LINES", "SEED_STYLES", "plot_curves", "plot_edf"]

#: one line style per seed, in every plot that draws several seeds of a cell
SEED_STYLES = ["-", "--", ":", "-."]


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    """Save as PNG atomically, readable like any file (:mod:`reproduce.utils.atomic`)."""
    from reproduce.utils.atomic import atomic_savefig

    return atomic_savefig(fig, path, format="png")


#: a grid drawn with more lines than this (cells x seeds) shows each cell's seeds as a band
MAX_LINES = 8


def plot_curves(df: pd.DataFrame, labels: list[str], path: Path | str,
                title: str = "", panels: list[str] | None = None) -> Path | None:
    """Train loss and val top-1 per epoch of every run in ``df`` (a grid's frame,
    :func:`reproduce.report.records.frame`: each row's ``curve`` holds its epochs);
    ``labels[i]`` names the cell of row ``i`` (its axis values, without the seed),
    ``panels[i]`` the panel it goes in (the stem of a two-axis grid).

    Up to :data:`MAX_LINES` lines (or one seed): one line per run, a style per seed. More: one
    column of panels per ``panels`` value, each cell a band, the mean over its seeds +- one sd
    (a diverged seed's x marks where it stopped). The legend sits outside the axes. Returns the
    PNG path, or None when no run has logged an epoch."""
    keys = panels or [""] * len(labels)
    curves = []
    for panel, label, (_, row) in zip(keys, labels, df.iterrows(), strict=True):
        metrics = [{"epoch": e.epoch, "train_loss": e.train_loss, "val_top1": e.val_top1}
                   for e in (row["curve"] or [])]
        if metrics:
            curves.append((panel, label, int(row["seed"]), row["status"], metrics))
    if not curves:
        return None
    seeds = sorted({c[2] for c in curves})
    if len(seeds) > 1 and len(curves) > MAX_LINES:
        fig = _bands(curves, seeds)
    else:
        fig = _lines([c[1:] for c in curves], seeds)
    note = f"seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"seed {seeds[0]}"
    if len(seeds) > 1 and len(curves) <= MAX_LINES:
        note += f" ({', '.join(SEED_STYLES[: len(seeds)])})"
    elif len(seeds) > 1:
        note += ": mean +- sd over seeds"
    if any(c[3] == "diverged" for c in curves):
        note += "; x = diverged"
    fig.suptitle(f"{title}  [{note}]" if title else note, fontsize=10)
    return _save(fig, Path(path))


def _lines(curves: list[tuple[str, int, str, list[dict[str, Any]]]], seeds: list[int]) -> Any:
    """One line per run on two axes (loss, top-1), a colour per cell and a style per seed."""
    fig = _figure(12.5, 4.2)
    ax_loss, ax_top1 = fig.subplots(1, 2)
    labels = list(dict.fromkeys(c[0] for c in curves))
    cmap = _colors(len(labels))
    for label, seed, status, metrics in curves:
        color = cmap[labels.index(label)]
        style = SEED_STYLES[seeds.index(seed) % len(SEED_STYLES)]
        epochs = [m["epoch"] for m in metrics]
        first = seed == seeds[0] or label not in {c[0] for c in curves if c[1] == seeds[0]}
        for ax, key in ((ax_loss, "train_loss"), (ax_top1, "val_top1")):
            values = [m.get(key) for m in metrics]
            ax.plot(epochs, values, style, color=color, linewidth=1.4, alpha=0.9, marker=".",
                    markersize=4, label=label if first and ax is ax_top1 else None)
            if status == "diverged":
                ax.plot(epochs[-1:], values[-1:], "x", color=color, markersize=9,
                        markeredgewidth=2)
    ax_loss.set(xlabel="epoch", ylabel="train loss", title="training loss")
    ax_top1.set(xlabel="epoch", ylabel="val top-1 (%)", title="validation top-1")
    for ax in (ax_loss, ax_top1):
        ax.grid(alpha=0.3)
    fig.legend(*ax_top1.get_legend_handles_labels(), loc="outside right center", fontsize=8)
    return fig


def _bands(curves: list[tuple[str, str, int, str, list[dict[str, Any]]]],
           seeds: list[int]) -> Any:
    """A column per panel, rows loss / top-1 (one panel: loss and top-1 side by side); per cell
    its mean over seeds +- one sd."""
    import numpy as np

    panels = list(dict.fromkeys(c[0] for c in curves))
    labels = list(dict.fromkeys(c[1] for c in curves))
    cmap = _colors(len(labels))
    if len(panels) == 1:
        fig = _figure(12.5, 4.2)
        axes = fig.subplots(1, 2, squeeze=False).T  # axes[row, 0]: loss, top-1
    else:
        fig = _figure(3.4 * len(panels) + 2.8, 6.4)
        axes = fig.subplots(2, len(panels), sharex=True, sharey="row", squeeze=False)
    for col, panel in enumerate(panels):
        for label in labels:
            runs = [c for c in curves if c[0] == panel and c[1] == label]
            if not runs:
                continue
            color = cmap[labels.index(label)]
            epochs = sorted({m["epoch"] for _, _, _, _, ms in runs for m in ms})
            for row, key in enumerate(("train_loss", "val_top1")):
                ax = axes[row, col]
                table = np.array([[next((m.get(key) for m in ms if m["epoch"] == e), None)
                                   for e in epochs] for _, _, _, _, ms in runs], dtype=float)
                with np.errstate(all="ignore"):
                    mean = np.nanmean(table, axis=0)
                    sd = np.nanstd(table, axis=0, ddof=1) if len(runs) > 1 else 0 * mean
                ax.plot(epochs, mean, color=color, linewidth=1.6,
                        label=f"{label} (n={len(runs)})" if row == 0 and col == 0 else None)
                ax.fill_between(epochs, mean - np.nan_to_num(sd), mean + np.nan_to_num(sd),
                                color=color, alpha=0.2, linewidth=0)
                for _, _, _, status, ms in runs:
                    if status == "diverged" and ms and ms[-1].get(key) is not None:
                        ax.plot([ms[-1]["epoch"]], [ms[-1][key]], "x", color=color,
                                markersize=8, markeredgewidth=2)
        for row, what in enumerate(("training loss", "validation top-1")):
            axes[row, col].grid(alpha=0.3)
            axes[row, col].set_title(panel if len(panels) > 1 and row == 0 else
                                     what if len(panels) == 1 else "", fontsize=9)
        axes[1, col].set_xlabel("epoch")
        if len(panels) == 1:
            axes[0, col].set_xlabel("epoch")
    axes[0, 0].set_ylabel("train loss")
    axes[1, 0].set_ylabel("val top-1 (%)")
    handles = [h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]]
    names = [n for ax in axes[0] for n in ax.get_legend_handles_labels()[1]]
    if not names:  # a label missing from the first panel: one legend entry per cell
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=cmap[i]) for i in range(len(labels))]
        names = labels
    fig.legend(handles, names, loc="outside right center", fontsize=8)
    return fig


def plot_edf(errors: dict[str, list[float]], path: Path | str, title: str = "") -> Path | None:
    """The EDF of top-1 error per model: fraction of (lr, wd) samples with error <= x."""
    errors = {k: sorted(v) for k, v in errors.items() if v}
    if not errors:
        return None
    fig = _figure(8.0, 4.2)
    ax = fig.subplots()
    colors = _colors(len(errors))
    for (label, errs), color in zip(errors.items(), colors, strict=True):
        n = len(errs)
        xs = [errs[0], *errs]
        ys = [0.0, *[(i + 1) / n for i in range(n)]]
        ax.step(xs, ys, where="post", color=color, linewidth=1.8, label=f"{label} (n={n})")
    ax.set(xlabel="top-1 error (%)", ylabel="cumulative fraction of runs", ylim=(0, 1.02),
           title=title or "EDF of top-1 error")
    ax.grid(alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right center", fontsize=8)
    return _save(fig, Path(path))


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]

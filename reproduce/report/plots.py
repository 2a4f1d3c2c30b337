"""Plots of a grid (matplotlib, Agg: no display needed), saved as PNG next to its table.

* :func:`plot_curves`: train loss and val top-1 per epoch for every cell of a grid, one colour per
  cell (its axis values), one line per seed; a diverged run ends in a cross.
* :func:`plot_edf`: Xiao et al.'s stability view for ``lr-wd-edf``: the empirical distribution
  function of top-1 error over the random (lr, wd) samples, one curve per model (diverged runs
  count as 100% error).

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, so nothing
touches pyplot's global state or needs a display.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["SEED_STYLES", "plot_curves", "plot_edf", "read_metrics"]

#: one line style per seed, in every plot that draws several seeds of a cell
SEED_STYLES = ["-", "--", ":", "-."]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


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


def plot_curves(df: pd.DataFrame, labels: list[str], path: Path | str,
                title: str = "") -> Path | None:
    """Train loss and val top-1 per epoch of every run in ``df`` (a grid's frame,
    :func:`reproduce.report.records.frame`: each row's ``curve`` holds its epochs);
    ``labels[i]`` names the cell of row ``i`` (its axis values, without the seed). Returns the
    PNG path, or None when no run has logged an epoch."""
    curves = []
    for label, (_, row) in zip(labels, df.iterrows(), strict=True):
        metrics = [{"epoch": e.epoch, "train_loss": e.train_loss, "val_top1": e.val_top1}
                   for e in (row["curve"] or [])]
        if metrics:
            curves.append((label, int(row["seed"]), row["status"], metrics))
    if not curves:
        return None
    fig = _figure(11.0, 4.2)
    ax_loss, ax_top1 = fig.subplots(1, 2)
    labels = list(dict.fromkeys(c[0] for c in curves))
    cmap = _colors(len(labels))
    seeds = sorted({c[1] for c in curves})
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
    ax_top1.legend(fontsize=7, loc="lower right", ncols=1 + len(labels) // 6)
    note = f"seeds {', '.join(map(str, seeds))} ({', '.join(SEED_STYLES[: len(seeds)])})" \
        if len(seeds) > 1 else f"seed {seeds[0]}"
    if any(c[2] == "diverged" for c in curves):
        note += "; x = diverged"
    fig.suptitle(f"{title}  [{note}]" if title else note, fontsize=10)
    return _save(fig, Path(path))


def plot_edf(errors: dict[str, list[float]], path: Path | str, title: str = "") -> Path | None:
    """The EDF of top-1 error per model: fraction of (lr, wd) samples with error <= x."""
    errors = {k: sorted(v) for k, v in errors.items() if v}
    if not errors:
        return None
    fig = _figure(6.0, 4.2)
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
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, Path(path))


def _colors(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]

"""Training stability of a grid's runs (``srv analyze stability``): the engine's per-epoch signals
(``metrics.jsonl``, recorded by :mod:`reproduce.training.loop`: grad norm mean / max, loss
spikes, largest update ratio) summed up per run beside its top-1, as a table and a plot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from reproduce.recipes.grids import Grid
from reproduce.report.records import cell_label
from reproduce.report.render import Entry, Table

__all__ = ["stability_rows", "stability_table", "plot_stability"]


def _max(values: Iterable[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and v == v]
    return max(vals) if vals else None


def stability_rows(grid: Grid, runs_root: Path | str, states: list[Any] | None = None
                   ) -> list[dict[str, Any]]:
    """One row per (cell, seed) of ``grid``: status, top-1 and the stability signals summed up
    over the logged epochs of ``metrics.jsonl`` (so diverged and unfinished runs have them too):
    grad-norm max (over steps) and mean (of the per-epoch means), loss spikes (sum), largest
    update ratio ``||w_new - w_old|| / ||w_old||``, plus the per-epoch ``metrics``."""
    from reproduce.experiments.cells import plan
    from reproduce.training.runs import RunDir

    runs_root = Path(runs_root)
    if states is None:
        states = plan(grid, runs_root)
    out = []
    for st in states:
        metrics = RunDir(st.run_dir).metrics()
        result = st.info.get("result") or {}
        means = [m["grad_norm_mean"] for m in metrics if m.get("grad_norm_mean") is not None]
        out.append({
            "cell": cell_label(grid, st.cell.labels),
            "labels": dict(st.cell.labels),
            "seed": st.cell.seed,
            "run": str(st.run_dir),
            "status": st.status,
            "epoch": st.info.get("epoch"),
            "epochs": st.epochs,
            "epochs_logged": len(metrics),
            "reason": st.info.get("reason"),
            "top1": result.get("top1"),
            "best_top1": result.get("best_top1"),
            "grad_norm_max": _max(m.get("grad_norm_max") for m in metrics),
            "grad_norm_mean": sum(means) / len(means) if means else None,
            "loss_spikes": sum(int(m.get("loss_spikes") or 0) for m in metrics)
            if metrics else None,
            "max_update_ratio": _max(m.get("max_update_ratio") for m in metrics),
            "diverged": st.status == "diverged",
            "metrics": metrics,
        })
    return out


def stability_table(grid: Grid, rows: Sequence[dict[str, Any]], provenance: str = "") -> Table:
    axes = [a.name for a in grid.axes]
    multi_seed = len({r["seed"] for r in rows}) > 1
    header = [grid.axis(a).title or a for a in axes] + (["seed"] if multi_seed else [])
    header += ["status", "top-1 (%)", "grad-norm max", "grad-norm mean", "loss spikes",
               "max update ratio"]
    align = ["l"] * (len(axes) + multi_seed) + ["l"] + ["r"] * 5
    body = []
    for r in rows:
        row = [Entry(text=grid.axis(a).show(r["labels"][a])) for a in axes]
        if multi_seed:
            row.append(Entry(text=str(r["seed"])))
        status = r["status"]
        if status == "diverged":
            status = f"diverged@e{r['epoch']}"
        elif status in ("partial", "running"):
            status = f"{status} e{r['epoch'] or 0}/{r['epochs']}"
        row.append(Entry(text=status))
        row.append(Entry(mean=r["top1"], fmt=".1f") if r["top1"] is not None
                   else Entry(text="—"))
        for key, fmt in (("grad_norm_max", ".3g"), ("grad_norm_mean", ".3g")):
            row.append(Entry(mean=r[key], fmt=fmt) if r[key] is not None else Entry(text="—"))
        row.append(Entry(text=str(r["loss_spikes"])) if r["loss_spikes"] is not None
                   else Entry(text="—"))
        row.append(Entry(mean=r["max_update_ratio"], fmt=".3g")
                   if r["max_update_ratio"] is not None else Entry(text="—"))
        body.append(row)
    notes = [
        "grad-norm: global L2 norm of the gradient before clipping, per step; max over all "
        "steps, mean of the per-epoch means (logged epochs only).",
        "loss spikes: steps whose loss exceeds spike_factor (recipe, default 2) x the running "
        "mean of the loss. max update ratio: largest ||w_new - w_old|| / ||w_old|| of a step.",
        "diverged@eN: non-finite loss or gradient in epoch N; its signals cover the epochs "
        "before it.",
    ]
    return Table(name=f"stability-{grid.name}", title=f"{grid.title}: training stability",
                 caption="Final top-1 beside the stability signals recorded during training.",
                 header=header, rows=body, align=align, notes=notes, provenance=provenance,
                 label=f"tab:stability-{grid.name}")


def plot_stability(rows: Sequence[dict[str, Any]], path: Path | str, title: str = ""
                   ) -> Path | None:
    """Per epoch: grad-norm mean, grad-norm max, largest update ratio (log scale) and val top-1,
    one colour per cell, one line style per seed; a diverged run ends in a cross."""
    from reproduce.report.plots import SEED_STYLES, _colors, _figure, _save

    rows = [r for r in rows if r["metrics"]]
    if not rows:
        return None
    fig = _figure(11.0, 7.6 + 0.22 * math.ceil(len(rows) / 4))
    axes = fig.subplots(2, 2).ravel()
    groups = list(dict.fromkeys(r["cell"] for r in rows))
    colors = _colors(len(groups))
    seeds = sorted({r["seed"] for r in rows})
    panels = (("grad_norm_mean", "grad-norm mean per epoch", True),
              ("grad_norm_max", "grad-norm max per epoch", True),
              ("max_update_ratio", "largest update ratio per epoch", True),
              ("val_top1", "val top-1 (%)", False))
    labelled: set[str] = set()
    for r in rows:
        color = colors[groups.index(r["cell"])]
        style = SEED_STYLES[seeds.index(r["seed"]) % len(SEED_STYLES)]
        epochs = [m["epoch"] for m in r["metrics"]]
        label = None if r["cell"] in labelled else r["cell"]
        labelled.add(r["cell"])
        for ax, (key, _, _) in zip(axes, panels, strict=True):
            ys = [m.get(key) for m in r["metrics"]]
            ax.plot(epochs, ys, style, color=color, marker=".", markersize=4, linewidth=1.4,
                    alpha=0.9, label=label if key == "val_top1" else None)
            if r["diverged"] and epochs:
                ax.plot(epochs[-1:], ys[-1:], "x", color=color, markersize=9,
                        markeredgewidth=2)
    from matplotlib.ticker import MaxNLocator

    for ax, (_, text, log) in zip(axes, panels, strict=True):
        ax.set(xlabel="epoch", title=text)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    fig.legend(fontsize=8, loc="outside lower center", ncols=min(len(groups), 4))
    note = f"seeds {', '.join(map(str, seeds))} ({', '.join(SEED_STYLES[: len(seeds)])})" \
        if len(seeds) > 1 else f"seed {seeds[0]}"
    if any(r["diverged"] for r in rows):
        note += "; x = last logged epoch of a diverged run"
    fig.suptitle(f"{title}  [{note}]" if title else note, fontsize=10)
    return _save(fig, Path(path))

"""A grid's table: its runs aggregated over seeds into the paper's layout, and the report files.

Pipeline: :func:`reproduce.report.records.frame` lays a grid's run records over its cells, a
DataFrame with one row per (cell, seed); :func:`build_table` checks it is one recipe and code
version (:func:`~reproduce.report.records.check_consistent`), aggregates over seeds (mean,
sample std with ddof=1, n) into the paper's layout, adds params / GFLOPs
(:mod:`reproduce.models.flops`), the statistics columns (:mod:`reproduce.report.stat_columns`)
and the published numbers (:mod:`reproduce.report.reference_columns`); :func:`report` renders it
(:mod:`reproduce.report.render`) and writes the table files and the plot.

Rules: a diverged seed counts as a chance-level top-1 in the mean (as in the claims) and is
flagged ``div@e<epoch>``, never dropped; unfinished cells say so (``1 pending``, ``running
e4/15``); the Wang et al. column stays empty until a user adds the paper's numbers to
``tables/reference/wang2022.csv``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reproduce.errors import SrvError
from reproduce.recipes.grids import Grid
from reproduce.records import RunRecord
from reproduce.report.records import (
    _axis_header,
    _match,
    _num_classes,
    _ordered,
    axis_column,
    check_consistent,
    frame,
)
from reproduce.report.reference_columns import (
    _cell_settings,
    _load_references,
    _reference_notes,
)
from reproduce.report.render import Entry, Table, render_latex, render_markdown, write_table
from reproduce.report.stat_columns import (
    AUTO,
    _stat_entries,
    _stat_header,
    _stats_notes,
    _stats_table,
    baseline_label,
    cell_stats,
    metric_values,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "build_table",
    "provenance",
    "edf_errors",
    "output_stem",
    "Report",
    "report",
]

METRIC_TEXT = {"top1": "final-epoch val top-1 (%)", "best_top1": "best-epoch val top-1 (%)"}
UNFINISHED = ("pending", "partial", "running", "failed")


# --- aggregation ---------------------------------------------------------------------------------


def _div_note(epochs: list[Any]) -> str:
    return "div@" + ",".join(f"e{int(e)}" if e == e and e is not None else "e?" for e in epochs)


def _aggregate(sub: pd.DataFrame, metric: str) -> Entry:
    """Mean ± sample std over the finished seeds (a diverged run at chance-level top-1, flagged
    div@eN), with the rest accounted for in notes."""
    import pandas as pd

    done = pd.Series(metric_values(sub, metric), dtype=float)
    entry = Entry()
    if len(done):
        entry.mean = float(done.mean())
        entry.std = float(done.std(ddof=1)) if len(done) > 1 else None
    entry.n = int(len(done))
    diverged = sub[sub["status"] == "diverged"]
    if len(diverged):
        entry.notes.append(_div_note(sorted(diverged["epoch"].tolist())))
    for status in UNFINISHED:
        part = sub[sub["status"] == status]
        if not len(part):
            continue
        if status in ("running", "partial"):
            done_ep = ",".join(f"e{int(e or 0)}/{int(t)}" for e, t in
                               zip(part["epoch"], part["epochs"], strict=True))
            entry.notes.append(f"{status} {done_ep}")
        else:
            entry.notes.append(f"{len(part)} {status}")
    if not len(done) and not entry.notes:
        entry.text = "—"
    return entry


def _bold_best(entries: list[Entry]) -> None:
    numbers = [e for e in entries if e.is_number]
    if len(numbers) < 2:
        return
    best = max(e.mean for e in numbers if e.mean is not None)
    for e in numbers:
        e.bold = e.mean is not None and format(e.mean, e.fmt) == format(best, e.fmt)


def _fmt_time(finished: pd.Series) -> str:
    dates = sorted({str(f)[:10] for f in finished.dropna()})
    if not dates:
        return "no finished runs yet"
    return dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"


def provenance(grid: Grid, df: pd.DataFrame, metric: str, mixed: list[str]) -> str:
    started = df[df["status"].isin(["done", "diverged"])]
    commits = sorted({str(c)[:7] for c in started["git_commit"].dropna()})
    versions = sorted({str(v) for v in started["code_version"].dropna()})
    dirty = bool(started["git_dirty"].fillna(False).astype(bool).any())
    code = (f"srv {', '.join(versions) or '?'}, "
            f"{'git ' + ', '.join(commits) if commits else 'no git commit recorded'}")
    if dirty:
        code += " (uncommitted changes)"
    n_val = sorted({int(v) for v in started["n_val"].dropna()})
    on = f" on {', '.join(map(str, n_val))} val images" if n_val else ""
    seeds = sorted({int(s) for s in df["seed"]})
    text = (f"Provenance: {code}; results of {_fmt_time(started['finished'])}; scale: "
            f"{grid.scale}; recipe {grid.recipe}; seeds {', '.join(map(str, seeds))}; "
            f"{METRIC_TEXT[metric]}{on}.")
    if mixed:
        text += " " + "; ".join(mixed) + "."
    return text


# --- complexity ----------------------------------------------------------------------------------


def _complexity(sub: pd.DataFrame) -> tuple[float, float] | None:
    """(params M, GFLOPs) of the one architecture a table row trains, counted with fvcore."""
    arch = sub[["model", "stem", "stem_width", "img_size"]].drop_duplicates()
    if len(arch) != 1:
        return None
    row = sub.iloc[0]
    from reproduce.models.flops import count

    kwargs: dict[str, Any] = {"num_classes": _num_classes(row)}
    if row["stem"]:
        kwargs["stem"] = row["stem"]
    if row["stem_width"]:
        kwargs["stem_width"] = int(row["stem_width"])
    rec = count(str(row["model"]), int(row["img_size"]), **kwargs)
    return rec.params_m, rec.gflops


# --- building ------------------------------------------------------------------------------------


def build_table(grid: Grid, df: pd.DataFrame, metric: str | None = None, force: bool = False,
                flops: bool = True, baseline: str | None = AUTO) -> Table:
    """The paper's layout of a grid's results (see the module docstring), with the statistics of
    :mod:`.stats` against the ``baseline`` row (a label of the first row axis; ``auto``:
    the grid's first row, patchify in the paper's grids; None or ``none``: no comparisons)."""
    metric = metric or grid.table["metric"]
    mixed = check_consistent(df, grid.name, force)
    if grid.table_kind == "edf":
        table = _build_edf(grid, df)
    else:
        table = _build_grid(grid, df, metric, flops, baseline)
    table.provenance = provenance(grid, df, metric, mixed)
    for extra in table.extra:
        extra.provenance = table.provenance
    return table


def _build_grid(grid: Grid, df: pd.DataFrame, metric: str, flops: bool,
                baseline: str | None = AUTO) -> Table:
    rows_ax, cols_ax = grid.row_axes, grid.column_axes
    other = [a.name for a in grid.axes if a.name not in rows_ax + cols_ax]
    if other:  # an axis that is neither rows nor columns becomes extra rows
        rows_ax = rows_ax + other
    refs = _load_references(grid)
    header = [_axis_header(grid, a) for a in rows_ax]
    align = ["l"] * len(rows_ax)
    body: list[list[Entry]] = []
    notes: list[str] = []
    multi_seed = bool(len(df)) and df["seed"].nunique() > 1
    any_div = bool((df["status"] == "diverged").any())
    any_unfinished = bool(df["status"].isin(UNFINISHED).any())
    row_combos = _ordered(grid, rows_ax)
    stat_cells = cell_stats(grid, df, rows_ax, cols_ax, metric, baseline) if len(df) else []
    with_stats = any(cs.n >= 2 for cs in stat_cells)
    base = baseline_label(grid, rows_ax, baseline) if with_stats else None
    base_name = grid.axis(rows_ax[0]).show(base) if base is not None else None
    n_tests = sum(cs.diff is not None for cs in stat_cells)
    extra: list[Table] = []

    if not cols_ax:
        header += ["top-1 (%)", "n"]
        align += ["r", "r"]
        if with_stats:
            header += _stat_header(base_name, any_div)
            align += ["r"] * (len(header) - len(align))
        with_cx = flops and not df.empty
        cx_rows: list[tuple[float, float] | None] = []
        if with_cx:
            for combo in row_combos:
                sub = df[_match(df, rows_ax, combo)]
                try:
                    cx_rows.append(_complexity(sub))
                except SrvError:
                    cx_rows.append(None)
            with_cx = any(c is not None for c in cx_rows)
        if with_cx:
            header += ["Params (M)", "GFLOPs"]
            align += ["r", "r"]
        header += [ref.title for ref in refs]
        align += ["r"] * len(refs)
        metric_entries = []
        for i, combo in enumerate(row_combos):
            sub = df[_match(df, rows_ax, combo)]
            entry = _aggregate(sub, metric)
            metric_entries.append(entry)
            row = [Entry(text=grid.axis(a).show(v)) for a, v in zip(rows_ax, combo, strict=True)]
            row += [entry, Entry(text=str(entry.n))]
            if with_stats:
                row += _stat_entries(stat_cells[i], base_name, any_div)
            if with_cx:
                cx = cx_rows[i]
                row += ([Entry(mean=cx[0], fmt=".2f"), Entry(mean=cx[1], fmt=".3g")] if cx
                        else [Entry(text="—"), Entry(text="—")])
            first = sub.iloc[0] if len(sub) else None
            cell_info = ({"model": first["model"], "stem": first["stem"]}
                         if first is not None else {"model": "", "stem": ""})
            if first is not None:
                cell_info.update(_cell_settings(grid, sub))
            for ref in refs:
                value = ref.lookup(combo[0] if len(rows_ax) == 1 else None, {}, cell_info)
                row.append(Entry(mean=value) if value is not None else Entry(text=""))
            body.append(row)
        _bold_best(metric_entries)
        if with_stats:
            notes += _stats_notes(base_name, n_tests, any_div)
        if with_cx:
            notes.append("Params and GFLOPs counted with fvcore at the run's input size and "
                         "classes; GFLOPs: 1 fused multiply-add = 1 FLOP, batch 1.")
        group = None
    else:
        col_combos = _ordered(grid, cols_ax)
        if len(cols_ax) == 1:
            axis = grid.axis(cols_ax[0])
            col_heads = [axis.show(c[0]) for c in col_combos]
            group = (_axis_header(grid, cols_ax[0]), len(header), len(col_heads))
        else:
            col_heads = [", ".join(f"{_axis_header(grid, a)}={grid.axis(a).show(v)}"
                                   for a, v in zip(cols_ax, c, strict=True)) for c in col_combos]
            group = None
        header += col_heads
        align += ["r"] * len(col_heads)
        columns: list[list[Entry]] = [[] for _ in col_combos]
        for combo in row_combos:
            row = [Entry(text=grid.axis(a).show(v)) for a, v in zip(rows_ax, combo, strict=True)]
            for j, ccombo in enumerate(col_combos):
                mask = _match(df, rows_ax + cols_ax, list(combo) + list(ccombo))
                entry = _aggregate(df[mask], metric)
                entry.show_n = multi_seed and entry.is_number
                columns[j].append(entry)
                row.append(entry)
            body.append(row)
        for col in columns:
            _bold_best(col)
        for ref in refs:  # published numbers as extra rows
            for combo in row_combos:
                sub = df[_match(df, rows_ax, combo)]
                if not len(sub):
                    continue
                cells = []
                for ccombo in col_combos:
                    mask = _match(sub, cols_ax, ccombo)
                    csub = sub[mask]
                    info = {"model": csub.iloc[0]["model"], "stem": csub.iloc[0]["stem"],
                            **_cell_settings(grid, csub)} if len(csub) else {}
                    value = ref.lookup(combo[0] if len(rows_ax) == 1 else None,
                                       dict(zip(cols_ax, ccombo, strict=True)), info) \
                        if info else None
                    cells.append(Entry(mean=value) if value is not None else Entry(text=""))
                if any(c.is_number for c in cells):
                    label = [Entry(text=f"{grid.axis(rows_ax[0]).show(combo[0])} "
                                        f"({ref.title})")]
                    label += [Entry(text="") for _ in rows_ax[1:]]
                    body.append(label + cells)
        if with_stats:
            extra.append(_stats_table(grid, rows_ax, cols_ax, stat_cells, base_name,
                                       any_div))
            notes.append("Intervals, differences and tests: the Statistics table below.")
    if not with_stats:
        preset = "" if grid.preset == grid.default_preset else f" --preset {grid.preset}"
        notes.append("One seed per cell (n=1): no std and no interval exists (no variance "
                     "estimate), so no test either; more seeds per cell give them "
                     f"(srv ablate {grid.name}{preset} --seeds A,B,C, seeds unused so far).")
    notes[:0] = [_stat_note(multi_seed)]
    skipped = df["skipped_steps"].fillna(0).astype(float) if "skipped_steps" in df else None
    if skipped is not None and (skipped > 0).any():
        notes.append(f"fp16: {int((skipped > 0).sum())} finished run(s) skipped "
                     f"{int(skipped.sum())} step(s) on gradient overflow (GradScaler), "
                     f"at most {int(skipped.max())} in one run.")
    if any_div:
        notes.append("div@eN: the run diverged (non-finite loss or gradient) in epoch N; shown, "
                     "never averaged.")
    if any_unfinished:
        notes.append("pending / partial / running / failed: runs not finished yet (srv ablate "
                     f"{grid.name} --dry-run shows them).")
    notes += _reference_notes(refs, grid)
    return Table(name=grid.name, title=grid.title, caption=grid.table["caption"] or grid.title,
                 header=header, rows=body, align=align, group=group, notes=notes,
                 label=grid.table["label"] or f"tab:{grid.name}", extra=extra)


def _stat_note(multi_seed: bool) -> str:
    if multi_seed:
        return ("mean ± sample std (ddof=1) over n seeds; bold: best mean in its column.")
    return "bold: best in its column."


def _build_edf(grid: Grid, df: pd.DataFrame) -> Table:
    rows_ax = grid.row_axes
    header = [_axis_header(grid, a) for a in rows_ax]
    header += ["samples", "done", "diverged", "other", "best err (%)", "p25 err (%)",
               "median err (%)"]
    align = ["l"] * len(rows_ax) + ["r"] * 7
    body = []
    for combo in _ordered(grid, rows_ax):
        sub = df[_match(df, rows_ax, combo)]
        errors = edf_errors(sub)
        done = int((sub["status"] == "done").sum())
        div = int((sub["status"] == "diverged").sum())
        row = [Entry(text=grid.axis(a).show(v)) for a, v in zip(rows_ax, combo, strict=True)]
        row += [Entry(text=str(len(sub))), Entry(text=str(done)), Entry(text=str(div)),
                Entry(text=str(len(sub) - done - div))]
        if errors:
            import numpy as np

            arr = np.array(errors)
            row += [Entry(mean=float(arr.min())), Entry(mean=float(np.percentile(arr, 25))),
                    Entry(mean=float(np.median(arr)))]
        else:
            row += [Entry(text="—")] * 3
        body.append(row)
    notes = [
        "Top-1 error = 100 - final-epoch val top-1; a diverged run counts as 100% error (it is "
        "a result of its (lr, wd) sample); percentiles over finished and diverged runs.",
        "(lr, wd) drawn log-uniformly from the grid's ranges; the same samples for every row "
        "(paired design); other = pending, partial, running or failed.",
    ]
    return Table(name=grid.name, title=grid.title, caption=grid.table["caption"] or grid.title,
                 header=header, rows=body, align=align, notes=notes,
                 label=grid.table["label"] or f"tab:{grid.name}", kind="edf")


def edf_errors(sub: pd.DataFrame) -> list[float]:
    """Top-1 errors of the finished runs, diverged ones as 100%."""
    errors = [100.0 - float(t) for t in sub[sub["status"] == "done"]["top1"].dropna()]
    errors += [100.0] * int((sub["status"] == "diverged").sum())
    return sorted(errors)


# --- the report of a grid: table files and plots -------------------------------------------------


def output_stem(grid: Grid) -> str:
    """``stem`` at the grid's default preset, ``stem-full`` at another: scales never overwrite
    each other's tables; ``stem-quick-seeds200-202`` when the seeds are not the preset's, so a
    run at other seeds never replaces the preset's table."""
    from reproduce.recipes.grids import load_grid

    name = grid.name if grid.preset == grid.default_preset else f"{grid.name}-{grid.preset}"
    try:
        preset_seeds = load_grid(grid.name, preset=grid.preset).seeds
    except SrvError:  # a grid file given by path with no such preset: name it as it is
        preset_seeds = grid.seeds
    if sorted(grid.seeds) != sorted(preset_seeds):
        name += f"-seeds{_seed_range(sorted(grid.seeds))}"
    return name


def _seed_range(seeds: list[int]) -> str:
    """``100-103`` for a run of seeds, else ``0_2_5``."""
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return "_".join(map(str, seeds))


@dataclass
class Report:
    table: Table
    texts: dict[str, str]  # format -> text
    paths: list[Path]


def report(grid: Grid, records: Sequence[RunRecord], tables_dir: Path | str | None,
           formats: tuple[str, ...] = ("markdown",), metric: str | None = None,
           force: bool = False, flops: bool = True, plot: bool = True,
           baseline: str | None = AUTO) -> Report:
    """Build a grid's table from its run records, render it, and (unless ``tables_dir`` is
    None) write ``<tables_dir>/<stem>.md`` / ``.tex`` and the plot ``<stem>.png`` (EDF:
    ``<stem>-edf.png``)."""
    df = frame(grid, records)
    table = build_table(grid, df, metric=metric, force=force, flops=flops, baseline=baseline)
    stem = output_stem(grid)
    paths: list[Path] = []
    image: Path | None = None
    if tables_dir is not None and plot:
        from reproduce.report import plots

        tables_dir = Path(tables_dir)
        if grid.table_kind == "edf":
            errors = {}
            for combo in _ordered(grid, grid.row_axes):
                sub = df[_match(df, grid.row_axes, combo)]
                label = ", ".join(grid.axis(a).show(v)
                                  for a, v in zip(grid.row_axes, combo, strict=True))
                errors[label] = edf_errors(sub)
            image = plots.plot_edf(errors, tables_dir / f"{stem}-edf.png", grid.title)
        else:
            # a grid of several axes: a panel per stem (else per first axis) value
            axes = list(grid.axes)
            split = next((a for a in axes if a.name == "stem"), axes[0]) \
                if len(axes) > 1 else None
            rest = [a for a in axes if a is not split]
            labels = [", ".join(f"{a.name} {a.show(row[axis_column(a.name)])}" if split
                                else a.show(row[axis_column(a.name)]) for a in rest)
                      for _, row in df.iterrows()]
            panels = None if split is None else [
                split.show(row[axis_column(split.name)]) for _, row in df.iterrows()]
            image = plots.plot_curves(df, labels, tables_dir / f"{stem}.png",
                                      grid.title, panels=panels)
        if image is not None:
            paths.append(image)
    texts: dict[str, str] = {}
    for fmt in formats:
        if fmt == "markdown":
            text = render_markdown(table)
            if image is not None:
                text += f"\n![{'EDF' if grid.table_kind == 'edf' else 'training curves'}]" \
                        f"({image.name})\n"
            suffix = ".md"
        elif fmt == "latex":
            text, suffix = render_latex(table), ".tex"
        else:
            raise SrvError(f"unknown table format {fmt!r}: markdown or latex")
        texts[fmt] = text
        if tables_dir is not None:
            paths.append(write_table(text, Path(tables_dir) / f"{stem}{suffix}"))
    return Report(table, texts, paths)

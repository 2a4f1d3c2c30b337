"""``srv table``: the paper's tables from finished runs (Markdown / booktabs LaTeX)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from reproduce.commands._options import RunsDirOpt
from reproduce.commands._records import RecordsOpt
from reproduce.errors import SrvError, handle_errors

SPECIAL = ("complexity", "reference")


@handle_errors
def table(
    names: Annotated[list[str] | None, typer.Argument(
        help="Grid names (stem, warmup, ...), 'complexity' (params/FLOPs of the catalogue), "
             "'reference' or a reference CSV name (published numbers); default: every grid "
             "with results.", show_default=False)] = None,
    preset: Annotated[str | None, typer.Option(
        help="Scale of the grid's runs: mini, quick (quick-linear for the stem grid's "
             "conv-linear arm) or full (default: the grid's default, mini).")] = None,
    seeds: Annotated[str | None, typer.Option(
        help="Only these seeds (default: every seed found in the runs directory).")] = None,
    axis: Annotated[list[str] | None, typer.Option(
        "--axis", help="As for srv ablate: --axis stem=patch,conv.")] = None,
    samples: Annotated[int | None, typer.Option(min=1, help="As for srv ablate.")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="The --set overrides the grid was run with.")] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Markdown (the default).")] = False,
    latex: Annotated[bool, typer.Option(
        "--latex", help="LaTeX (booktabs, caption, label); with --markdown: both.")] = False,
    metric: Annotated[str | None, typer.Option(
        help="top1 (final epoch, default) or best_top1 (best epoch).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Mix results of different recipes or code versions.")] = False,
    runs_dir: RunsDirOpt = Path("runs"),
    records: RecordsOpt = None,
    tables_dir: Annotated[Path | None, typer.Option(
        help="Where tables are written; default: $SRV_TABLES_DIR, else <runs-dir>/tables (the "
             "shipped tables/ only with --tables-dir tables).")] = None,
    write: Annotated[bool, typer.Option(
        "--write/--no-write", help="Write tables/<name>.md / .tex (and the plot).")] = True,
    flops: Annotated[bool, typer.Option(
        "--flops/--no-flops", help="Params and GFLOPs columns (fvcore).")] = True,
    plot: Annotated[bool, typer.Option(
        "--plot/--no-plot", help="Training curves (EDF for lr-wd-edf) as PNG.")] = True,
    baseline: Annotated[str, typer.Option(
        help="The reference row every other row is compared with (a value of the first row "
             "axis, e.g. patch); auto: the grid's first row; none: no comparisons.")] = "auto",
) -> None:
    """Print (and write to tables/) the table of each named grid, with its statistics.

    Mean ± std over seeds with n, the 95% t-interval of each mean, each row's difference from
    the --baseline row with Welch's interval and test (Holm-corrected), divergence rates with
    Wilson intervals, diverged runs as div@eN, published numbers beside ours, params/FLOPs and
    a provenance line. Refuses to mix
    recipes or code versions unless --force."""
    from reproduce.commands._records import output_dir
    from reproduce.recipes.grids import list_grids
    from reproduce.report.reference import reference_names
    from reproduce.report.reference_columns import reference_table
    from reproduce.report.render import render_latex, render_markdown, write_table
    from reproduce.report.tables import report

    formats = tuple(f for f, on in (("markdown", markdown or not latex), ("latex", latex)) if on)
    out_dir = output_dir(runs_dir, tables_dir) if write else None
    index = None
    if records is not None:
        from reproduce.commands._records import record_index

        index = record_index(runs_dir, records)
        if seeds or axis or samples or sets:
            raise SrvError("--seeds, --axis, --samples and --set select runs of a runs folder; "
                           "with --records every recorded run of the grid is used")
    if metric is not None and metric not in ("top1", "best_top1"):
        raise SrvError(f"--metric {metric!r}: use top1 or best_top1")
    explicit = bool(names)
    wanted = names or list_grids()
    printed = 0
    written: list[Path] = []
    for name in wanted:
        if name == "complexity":
            written += _complexity(formats, out_dir)
            printed += 1
            continue
        if name == "reference":
            refs = reference_names()
        elif name.startswith("reference/") or (name in reference_names()
                                               and name not in list_grids()):
            refs = [name.removeprefix("reference/")]
        else:
            refs = []
        if refs:
            for ref in refs:
                t = reference_table(ref)
                for fmt in formats:
                    text = render_markdown(t) if fmt == "markdown" else render_latex(t)
                    print(text)
                    if out_dir is not None:
                        suffix = ".md" if fmt == "markdown" else ".tex"
                        written.append(write_table(text, Path(out_dir) / f"{t.name}{suffix}"))
                printed += 1
            continue
        source = str(records) if index is not None else str(runs_dir)
        if index is not None:
            found = _recorded(index, name, preset)
        else:
            found = _from_runs(name, preset, seeds, axis, sets, samples, runs_dir)
        if not found and explicit:
            raise SrvError(f"grid {name!r} has no finished runs in {source}: run 'srv "
                           f"ablate {name}' first (or give --runs-dir / --records)")
        for grid, grid_records in found:
            rep = report(grid, grid_records, out_dir, formats=formats, metric=metric,
                         force=force, flops=flops, plot=plot, baseline=baseline)
            for fmt in formats:
                print(rep.texts[fmt])
            written += rep.paths
            printed += 1
    if not printed:
        raise SrvError(f"no grid has finished runs in {records or runs_dir}: run e.g. 'srv "
                       f"ablate stem --preset quick' first (or give --runs-dir / --records)")
    if written:
        print("wrote " + ", ".join(str(p) for p in written))


def _recorded(index: Any, name: str, preset: str | None) -> list[tuple[Any, list[Any]]]:
    """A grid's recorded runs at ``preset`` (default: at every preset the records hold)."""
    from reproduce.recipes.grids import load_grid

    out = []
    for p in [preset] if preset else load_grid(name).presets:
        found = index.frame(name, p)
        if found is not None:
            out.append((found[0], [r for r in index.records
                                   if r.grid == name and r.preset == p]))
    return out


def _from_runs(name: str, preset: str | None, seeds: str | None, axis: list[str] | None,
               sets: list[str] | None, samples: int | None,
               runs_dir: Path) -> list[tuple[Any, list[Any]]]:
    """A grid's runs in a runs folder as records, at every seed one of its cells ran (or
    ``--seeds``); None when none finished."""
    from reproduce.commands.ablate import load_cli_grid
    from reproduce.experiments.export import grid_records, grid_seeds

    grid = load_cli_grid(name, preset, seeds, axis, sets, samples)
    if seeds is None:  # every seed that was run, not only the preset's
        found = grid_seeds(grid, runs_dir)
        if found != grid.seeds:
            grid = load_cli_grid(name, preset, ",".join(map(str, found)), axis, sets, samples)
    recs = grid_records(grid, runs_dir)
    if not any(r.result.status in ("done", "diverged") for r in recs):
        return []
    return [(grid, recs)]


def _complexity(formats: tuple[str, ...], out_dir: Path | None) -> list[Path]:
    """The complexity table of the whole catalogue: the same files as ``srv flops --write``."""
    from reproduce.models import flops as fl
    from reproduce.report.render import write_table

    records = fl.count_many(fl.catalogue_names())
    paths = []
    for fmt in formats:
        text = fl.to_markdown(records) if fmt == "markdown" else fl.to_latex(records)
        print(text)
        if out_dir is not None:
            suffix = ".md" if fmt == "markdown" else ".tex"
            paths.append(write_table(text, Path(out_dir) / f"complexity{suffix}"))
    return paths


def register(app: typer.Typer) -> None:
    app.command("table")(table)

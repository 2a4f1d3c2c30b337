"""``srv analyze``: why it works - patch-token diversity, stem BN scales, training stability."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from reproduce.commands._options import RunsDirOpt
from reproduce.commands.eval import Weights
from reproduce.errors import SrvError, handle_errors

analyze_app = typer.Typer(
    name="analyze",
    help="Why it works: per-layer patch-token diversity, the stem's BN scales and the training "
         "stability signals of runs, checkpoints or untrained models (docs/analysis.md).",
    no_args_is_help=True,
)


class Format(StrEnum):
    table = "table"
    markdown = "markdown"
    json = "json"


# options shared by the commands
TargetsArg = Annotated[list[str] | None, typer.Argument(
    help="Run directories, .pt checkpoints or catalogue model names (untrained, built with "
         "--seed).", show_default=False)]
GridOpt = Annotated[str | None, typer.Option(
    "--grid", help="An ablation grid (name or .toml): every cell whose run has a checkpoint.")]
PresetOpt = Annotated[str | None, typer.Option(
    help="The grid's scale: mini or full (default: the grid's default).")]
SeedsOpt = Annotated[str | None, typer.Option(
    help="Only these seeds of the grid (default: every seed found in the runs directory).")]
AxisOpt = Annotated[list[str] | None, typer.Option(
    "--axis", help="As for srv ablate: --axis stem=patch,conv.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Recipe overrides KEY=VALUE: those the grid was run with, or the recipe of an "
                  "untrained model (e.g. --set img_size=16).")]
WeightsOpt = Annotated[Weights, typer.Option(
    help="last (the final epoch, as the tables report), best or ema.")]
RecipeOpt = Annotated[str | None, typer.Option(
    help="Recipe of untrained models (default: the model's own, as srv train: mini for "
         "vit-mini-*, xiao for vitp/vitc, deit otherwise).")]
SeedOpt = Annotated[int, typer.Option(help="Init seed of untrained models.")]
FormatOpt = Annotated[Format, typer.Option(
    "--format", help="table (rich), markdown or json.")]
OutOpt = Annotated[Path | None, typer.Option(
    help="The PNG to write (a Markdown table goes next to it); default: in <runs-dir>/tables/ "
         "($SRV_TABLES_DIR).")]
WriteOpt = Annotated[bool, typer.Option(
    "--write/--no-write", help="Write the PNG and its Markdown table.")]


def _note(text: str) -> None:
    print(text, file=sys.stderr)


def _device(want: str) -> str:
    import torch

    if want not in ("auto", "cpu", "cuda"):
        raise SrvError(f"--device {want!r}: use auto, cpu or cuda")
    if want == "cuda" and not torch.cuda.is_available():
        raise SrvError("--device cuda but no GPU is visible: use --device cpu")
    if want == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return want


def _load_grid(name: str, preset: str | None, seeds: str | None, axis: list[str] | None,
               sets: list[str] | None, runs_dir: Path) -> Any:
    from reproduce.commands.ablate import load_cli_grid
    from reproduce.experiments.export import grid_seeds

    grid = load_cli_grid(name, preset, seeds, axis, sets, None)
    if seeds is None:  # every seed that was run, not only the preset's (as srv table)
        found = grid_seeds(grid, runs_dir)
        if found != grid.seeds:
            grid = load_cli_grid(name, preset, ",".join(map(str, found)), axis, sets, None)
    return grid


def _targets(targets: list[str] | None, grid_name: str | None, preset: str | None,
             seeds: str | None, axis: list[str] | None, sets: list[str] | None,
             runs_dir: Path, weights: str, recipe: str | None, seed: int,
             command: str) -> tuple[list[Any], Any, list[str]]:
    """The targets of the command line (grid cells first), the grid (or None), skip notes."""
    from reproduce.analysis.targets import grid_targets, resolve_target, unique_labels
    from reproduce.recipes.recipe import parse_overrides

    if not targets and not grid_name:
        raise SrvError(f"srv analyze {command}: give run directories, checkpoints or model "
                       f"names, or --grid NAME (e.g. --grid stem --preset mini)")
    if grid_name is None and (preset or seeds or axis):
        raise SrvError("--preset, --seeds and --axis select the runs of a grid: add --grid NAME")
    specs: list[Any] = []
    notes: list[str] = []
    grid = None
    if grid_name is not None:
        grid = _load_grid(grid_name, preset, seeds, axis, sets, runs_dir)
        specs, skipped = grid_targets(grid, runs_dir, weights)
        notes += [f"skipped {s}" for s in skipped]
        if not specs:
            raise SrvError(f"grid {grid.name!r} ({grid.preset}) has no run with a checkpoint in "
                           f"{runs_dir}: run 'srv ablate {grid.name} --preset {grid.preset}' "
                           f"first (or give --runs-dir)")
    overrides = parse_overrides(sets or []) if grid_name is None else {}
    specs += [resolve_target(t, recipe, overrides, seed) for t in targets or []]
    unique_labels(specs)
    return specs, grid, notes


def _default_out(kind: str, grid: Any, runs_dir: Path) -> Path:
    """``<runs>/tables/<kind>-<grid>.png`` (or ``$SRV_TABLES_DIR``): never a clone's shipped
    ``tables/`` unless ``--out`` says so."""
    from reproduce.commands._records import output_dir
    from reproduce.report.tables import output_stem

    name = f"{kind}-{output_stem(grid)}" if grid is not None else kind
    return output_dir(runs_dir) / f"{name}.png"


def _emit(tables: list[Any], fmt: Format, record: dict[str, Any], out: Path | None,
          image: Path | None, write: bool) -> None:
    """Print the tables (or the JSON record) and write the Markdown file next to the PNG."""
    import json

    from reproduce.report.render import render_markdown, write_table

    markdown = "\n".join(render_markdown(t) for t in tables)
    if image is not None:
        markdown += f"\n![{tables[0].title}]({image.name})\n"
    if fmt == Format.json:
        print(json.dumps(record, indent=2, default=str))
    elif fmt == Format.markdown:
        print(markdown)
    else:
        from rich.console import Console

        from reproduce.report.render import to_rich

        console = Console()
        for t in tables:
            console.print(to_rich(t))
            for note in t.notes:
                console.print(f"  - {note}", highlight=False, markup=False)
    if write and out is not None:
        written = [write_table(markdown, out.with_suffix(".md"))]
        if image is not None:
            written.insert(0, image)
        _note("wrote " + ", ".join(str(p) for p in written))


@handle_errors
def diversity(
    targets: TargetsArg = None,
    grid: GridOpt = None,
    preset: PresetOpt = None,
    seeds: SeedsOpt = None,
    axis: AxisOpt = None,
    sets: SetOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    images: Annotated[int, typer.Option(
        help="Number of val images in the fixed batch (evenly spaced over the val set).")] = 256,
    weights: WeightsOpt = Weights.last,
    recipe: RecipeOpt = None,
    seed: SeedOpt = 0,
    data: Annotated[str | None, typer.Option(
        help="Data folder (default: the run's own).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Forward batch size.")] = 64,
    centre: Annotated[bool, typer.Option(
        "--centre/--no-centre", help="Effective rank of the centred tokens (the tokens' mean "
        "removed per image) instead of the uncentred ones.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    fmt: FormatOpt = Format.table,
    out: OutOpt = None,
    write: WriteOpt = True,
) -> None:
    """Per-layer patch-token diversity (after the stem and after every transformer block): mean
    pairwise cosine similarity (lower = more diverse) and effective rank (higher = more diverse)
    on a fixed batch of val images. Prints the table and draws every target's curves on one
    PNG."""
    from reproduce.analysis.diversity import diversity_tables, measure_diversity, plot_diversity

    if images < 2:
        raise SrvError(f"--images {images}: give at least 2 images")
    specs, g, notes = _targets(targets, grid, preset, seeds, axis, sets, runs_dir,
                               weights.value, recipe, seed, "diversity")
    dev = _device(device)
    for note in notes:
        _note(note)
    results = measure_diversity(specs, images, weights.value, dev, data, batch_size, centre)
    title = f"{g.title}" if g is not None else "Patch-token diversity"
    described = sorted({t.info.get("images", "") for t in specs})
    provenance = (f"Provenance: srv analyze diversity; weights {weights.value} (untrained models: "
                  f"init seed {seed}); {'; '.join(described)}; effective rank "
                  f"{'centred' if centre else 'uncentred'}; device {dev}.")
    tables = diversity_tables(specs, results, title=title, provenance=provenance,
                              notes=[n[0].upper() + n[1:] + "." for n in notes])
    image = None
    path = out or _default_out("diversity", g, runs_dir)
    if write:
        image = plot_diversity(specs, results, path, title)
    record = {
        "command": "diversity", "weights": weights.value, "images": images,
        "centre": centre,
        "metrics": {
            "cosine": "mean over images of the mean off-diagonal cosine similarity of the "
                      "patch tokens (lower = more diverse)",
            "erank": "mean over images of exp(entropy of the normalised singular values) of "
                     "the L2-normalised, uncentred N x C patch-token matrix (Roy & Vetterli "
                     "2007; higher = more diverse)" + (
                         "; tokens centred per image" if centre else ""),
        },
        "grid": {"name": g.name, "preset": g.preset} if g is not None else None,
        "skipped": notes,
        "plot": str(image) if image else None,
        "targets": [{**t.describe(), **r.to_dict()} for t, r in zip(specs, results, strict=True)],
    }
    _emit(tables, fmt, record, path if write else None, image, write)


@handle_errors
def stem_bn(
    targets: TargetsArg = None,
    grid: GridOpt = None,
    preset: PresetOpt = None,
    seeds: SeedsOpt = None,
    axis: AxisOpt = None,
    sets: SetOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    weights: WeightsOpt = Weights.last,
    recipe: RecipeOpt = None,
    seed: SeedOpt = 0,
    fmt: FormatOpt = Format.table,
    out: OutOpt = None,
    write: WriteOpt = True,
) -> None:
    """The per-channel BN scale (gamma) of every BatchNorm in the stem of conv-stem models:
    summary stats (mean, std, min, max, fraction |gamma| < 0.1) and a violin plot per layer.
    A model whose stem has no BN is an error (grid cells without BN are skipped)."""
    from reproduce.analysis.stem_bn import SMALL_GAMMA, plot_stem_bn, stem_bn_stats, stem_bn_table

    specs, g, notes = _targets(targets, grid, preset, seeds, axis, sets, runs_dir,
                               weights.value, recipe, seed, "stem-bn")
    kept, layers = [], []
    for t in specs:
        model = t.load(weights.value, "cpu", t.recipe().num_classes or None)
        try:
            layers.append(stem_bn_stats(model, t.label))
            kept.append(t)
        except SrvError:
            if not t.info.get("cell"):  # a target named on the command line: an error
                raise
            notes.append(f"skipped {t.label}: no BN in its stem")
        del model
    if not kept:
        raise SrvError(f"no run of grid {g.name!r} has a stem with BatchNorm: stem-bn needs "
                       f"a conv-stem with BN (conv, conv-norelu, xiao, patch-bnrelu)")
    for note in notes:
        _note(note)
    title = f"{g.title}" if g is not None else "Stem BN scales"
    provenance = f"Provenance: srv analyze stem-bn; weights {weights.value} (untrained models: " \
                 f"init seed {seed})."
    table = stem_bn_table(kept, layers, provenance=provenance,
                          notes=[n[0].upper() + n[1:] + "." for n in notes])
    path = out or _default_out("stem-bn", g, runs_dir)
    image = plot_stem_bn(kept, layers, path, title) if write else None
    record = {
        "command": "stem-bn", "weights": weights.value, "small_gamma": SMALL_GAMMA,
        "grid": {"name": g.name, "preset": g.preset} if g is not None else None,
        "skipped": notes, "plot": str(image) if image else None,
        "targets": [{**t.describe(), "layers": [{**bn.stats(), "gamma": bn.gamma} for bn in bns]}
                    for t, bns in zip(kept, layers, strict=True)],
    }
    _emit([table], fmt, record, path if write else None, image, write)


@handle_errors
def stability(
    grid: Annotated[str, typer.Argument(
        help="A grid name (warmup, lr, optimizer, ...) or a .toml path.")],
    preset: PresetOpt = None,
    seeds: SeedsOpt = None,
    axis: AxisOpt = None,
    sets: SetOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    fmt: FormatOpt = Format.table,
    out: OutOpt = None,
    write: WriteOpt = True,
) -> None:
    """Training stability of a grid's runs: final top-1 beside grad-norm max / mean, loss
    spikes, the largest update ratio and diverged status (from each run's metrics.jsonl), and a
    PNG of the per-epoch curves."""
    from reproduce.analysis.stability_summary import plot_stability, stability_rows, stability_table

    g = _load_grid(grid, preset, seeds, axis, sets, runs_dir)
    rows = stability_rows(g, runs_dir)
    if not any(r["metrics"] for r in rows):
        raise SrvError(f"grid {g.name!r} ({g.preset}) has no run with a logged epoch in "
                       f"{runs_dir}: run 'srv ablate {g.name} --preset {g.preset}' first (or "
                       f"give --runs-dir)")
    provenance = f"Provenance: srv analyze stability; scale: {g.scale}; recipe {g.recipe}; " \
                 f"runs in {runs_dir}."
    table = stability_table(g, rows, provenance=provenance)
    path = out or _default_out("stability", g, runs_dir)
    image = plot_stability(rows, path, g.title) if write else None
    record = {"command": "stability", "grid": {"name": g.name, "preset": g.preset},
              "plot": str(image) if image else None,
              "runs": [{k: v for k, v in r.items() if k != "metrics"} for r in rows]}
    _emit([table], fmt, record, path if write else None, image, write)


analyze_app.command("diversity")(diversity)
analyze_app.command("stem-bn")(stem_bn)
analyze_app.command("stability")(stability)


def register(app: typer.Typer) -> None:
    app.add_typer(analyze_app, name="analyze")

"""``srv flops``: parameters and GFLOPs of catalogue models (fvcore, 1 FMA = 1 FLOP)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from reproduce.errors import handle_errors


class Format(StrEnum):
    table = "table"
    markdown = "markdown"
    latex = "latex"
    json = "json"


@handle_errors
def flops(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="Catalogue model names (see 'srv models'); all of them if none.",
                       show_default=False),
    ] = None,
    fmt: Annotated[
        Format,
        typer.Option("--format", "-f", case_sensitive=False,
                     help="table (rich, for the terminal), markdown, latex or json."),
    ] = Format.table,
    img_size: Annotated[
        int | None,
        typer.Option("--img-size", min=1, show_default=False,
                     help="Input size; default: each model's own (224, or 32 for vit-mini-*)."),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", show_default=False,
                     help="A model argument for every model counted: --set stem_width=32, "
                          "--set stem=conv-nobn, --set patch_size=8 (repeatable)."),
    ] = None,
    write: Annotated[
        bool,
        typer.Option("--write", help="Also write complexity.md and complexity.tex to --out."),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", file_okay=False, show_default=False,
                     help="Directory for --write; default: tables/ in the current directory "
                     "(or $SRV_TABLES_DIR)."),
    ] = None,
) -> None:
    """Count parameters (M) and GFLOPs per image, with a stem / blocks / head breakdown.

    Counted with fvcore, attention included: timm's fused
    scaled_dot_product_attention gets its own FLOP handle.
    1 fused multiply-add = 1 FLOP, as DeiT and pycls report.
    Fails rather than print a total that skipped a heavy op
    (matmul, conv, linear, attention).
    """
    import json
    import sys

    from reproduce.models import flops as fl
    from reproduce.report.reference import tables_dir

    known = fl.catalogue_names()
    names = list(models) if models else known
    kwargs = parse_model_sets(sets or [])
    if any(n not in known for n in names):  # an unknown name fails here, before any count
        from reproduce.models import get_entry

        names = [get_entry(m).name for m in names]
    records = []
    if fmt is Format.table and sys.stderr.isatty():
        from rich.console import Console

        with Console(stderr=True).status("counting") as status:
            for i, name in enumerate(names, 1):
                status.update(f"counting {name} ({i}/{len(names)})")
                records.append(fl.count(name, img_size, **kwargs))
    else:
        records = [fl.count(name, img_size, **kwargs) for name in names]
    if kwargs:
        print("with " + ", ".join(f"{k}={v}" for k, v in kwargs.items()), file=sys.stderr)

    if fmt is Format.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
    elif fmt is Format.markdown:
        print(fl.to_markdown(records), end="")
    elif fmt is Format.latex:
        print(fl.to_latex(records), end="")
    else:
        _print_table(records)

    if write:
        paths = fl.write_tables(records, out or tables_dir())
        print("srv: wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)


#: the model arguments ``srv flops --set`` takes (those of :func:`reproduce.models.create` that
#: change the architecture), with their types
MODEL_SETS: dict[str, type] = {"stem": str, "stem_width": int, "patch_size": int}


def parse_model_sets(sets: list[str]) -> dict[str, object]:
    """``["stem_width=32"]`` -> ``{"stem_width": 32}``; a bad key or value is one line."""
    from reproduce.errors import SrvError

    out: dict[str, object] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in MODEL_SETS:
            raise SrvError(f"--set {item!r}: srv flops takes {', '.join(MODEL_SETS)} "
                           f"(e.g. --set stem_width=32)")
        try:
            out[key] = MODEL_SETS[key](value.strip())
        except ValueError:
            raise SrvError(f"--set {item!r}: {key} takes an integer") from None
    return out


def _print_table(records: list) -> None:
    from rich.console import Console
    from rich.table import Table

    from reproduce.models import flops as fl

    table = Table(title="Parameters and FLOPs (1 fused multiply-add = 1 FLOP)",
                  caption=f"{fl.CONVENTION}.\nBreakdown cells: params (M) above GFLOPs; "
                  f"{fl.BREAKDOWN_NOTE}.")
    table.add_column("model", no_wrap=True)
    table.add_column("input", justify="right", no_wrap=True)
    table.add_column("params (M)", justify="right")
    table.add_column("GFLOPs", justify="right")
    for part in fl.PARTS:
        table.add_column(part, justify="right", no_wrap=True)
    for rec in records:
        cells = [rec.model, str(rec.img_size), f"{rec.params_m:.2f}", f"{rec.gflops:.3f}"]
        cells += [f"{rec.part_params_m(part):.2f}\n{rec.part_gflops(part):.3f}"
                  for part in fl.PARTS]
        table.add_row(*cells, end_section=True)
    console = Console()
    console.print(table)
    skipped = ", ".join(fl.ignored_ops(records)) or "none"
    console.print(f"Element-wise ops fvcore does not count: {skipped}.", style="dim",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("flops")(flops)

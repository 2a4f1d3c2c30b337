"""``srv models``: list the model catalogue."""

from __future__ import annotations

from typing import Annotated

import typer

from reproduce.errors import handle_errors


@handle_errors
def models(
    pattern: Annotated[str, typer.Argument(help="Only names containing this text.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List the catalogue models (name, timm name, stem, size) with a one-line description."""
    import json

    from rich.console import Console
    from rich.table import Table

    from reproduce.models import CATALOGUE

    entries = [e for e in CATALOGUE.values() if pattern in e.name]
    if as_json:
        print(json.dumps([{"model": e.name, "timm_name": e.timm_name, "stem": e.stem,
                           "img_size": e.img_size, "stride": e.stride, "embed_dim": e.embed_dim,
                           "depth": e.depth, "description": e.description} for e in entries],
                         indent=2))
        return
    table = Table("model", "timm name", "description", title="srv model catalogue")
    for e in entries:
        table.add_row(e.name, e.timm_name, e.description)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models)

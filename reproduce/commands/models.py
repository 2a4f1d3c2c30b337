"""``srv models``: list the model catalogue."""

from __future__ import annotations

from typing import Annotated

import typer

from reproduce.errors import handle_errors

#: the width ``srv models`` keeps to (a standard terminal): one line per model, nothing cut
WIDTH = 80


@handle_errors
def models(
    pattern: Annotated[str, typer.Argument(help="Only names containing this text.")] = "",
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print JSON instead (with each model's full description and heads).")
    ] = False,
) -> None:
    """List the catalogue: model, body, width x depth, input / total stride and stem.

    One line per model within 80 columns; the stems and the ViT_C stem specs are spelled out
    below the table.
    """
    import json

    from reproduce.models import CATALOGUE

    entries = [e for e in CATALOGUE.values() if pattern in e.name]
    if as_json:
        print(json.dumps([{"model": e.name, "timm_name": e.timm_name, "stem": e.stem,
                           "img_size": e.img_size, "stride": e.stride, "embed_dim": e.embed_dim,
                           "depth": e.depth, "num_heads": e.num_heads,
                           "description": e.description} for e in entries], indent=2))
        return
    print("\n".join(catalogue_lines(entries)))


def catalogue_lines(entries: list) -> list[str]:
    """The catalogue as plain lines of at most :data:`WIDTH` characters."""
    import textwrap

    from reproduce.models import STEM_KINDS

    def body(e) -> str:  # noqa: ANN001
        return e.description.split(" (")[0].split(":")[0].removeprefix("Xiao et al. ")

    specs: dict[str, list[str]] = {}  # a ViT_C stem spec -> its models
    rows = [("model", "body", "width x depth", "input/stride", "stem")]
    for e in entries:
        stem = e.stem
        if e.stem not in STEM_KINDS:
            specs.setdefault(e.stem, []).append(e.name)
            stem = f"spec {list(specs).index(e.stem) + 1} (below)"
        rows.append((e.name, body(e), f"{e.embed_dim} x {e.depth}",
                     f"{e.img_size}/{e.stride}", stem))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "-" * min(WIDTH, max(len(line) for line in lines)))
    used = {e.stem for e in entries if e.stem in STEM_KINDS}
    if used:
        lines += ["", "stems (srv train MODEL --set stem=... takes these or a spec):"]
        pad = max(len(k) for k in used) + 4
        for kind, desc in STEM_KINDS.items():
            if kind in used:
                lines += textwrap.wrap(desc, WIDTH, initial_indent=f"  {kind}".ljust(pad),
                                       subsequent_indent=" " * pad)
    if specs:
        lines.append("")
    for i, (spec, names) in enumerate(specs.items(), 1):
        convs, _, rest = spec.partition(";")  # a spec fits 80 columns on two lines
        lines += [f"spec {i} ({', '.join(names)}): {rest}", f"  {convs}"]
    if specs:
        lines.append("(KsSc: a KxK conv of stride S to C channels; 1s1: the 1x1 projection)")
    return lines


def register(app: typer.Typer) -> None:
    app.command("models")(models)

"""``srv bench``: training throughput of srv models next to a plain timm model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import SrvError, handle_errors


@handle_errors
def bench(
    models: Annotated[str, typer.Option(
        help="Comma list; the first is the baseline (timm:NAME for a plain timm model).")]
    = "timm:vit_small_patch16_224,vit-s-patch,vit-s-conv",
    modes: Annotated[str, typer.Option(help="Comma list of eager, compile.")] = "eager,compile",
    batch: Annotated[int, typer.Option(help="Batch size per step.")] = 256,
    img_size: Annotated[int, typer.Option(help="Input resolution.")] = 224,
    amp: Annotated[str, typer.Option(help="off, bf16 or fp16.")] = "bf16",
    steps: Annotated[int, typer.Option(help="Timed steps.")] = 30,
    warmup: Annotated[int, typer.Option(help="Warm-up steps (the first compiles).")] = 10,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")]
    = None,
) -> None:
    """Train-step img/s (synthetic data on the device) in eager and compiled mode, with the
    ratio to the first model measured in the same run."""
    import json

    from rich.console import Console
    from rich.table import Table

    from ..bench import as_dicts, environment_line, run_bench
    from ..models import get_entry
    from ..runs import atomic_write_json

    names = [m.strip() for m in models.split(",") if m.strip()]
    for name in names:
        if not name.startswith("timm:"):
            get_entry(name)
    mode_list = [m.strip() for m in modes.split(",") if m.strip()]
    if bad := [m for m in mode_list if m not in ("eager", "compile")]:
        raise SrvError(f"unknown mode {bad[0]!r}: use eager, compile or both (--modes "
                       f"eager,compile)")
    if amp not in ("off", "bf16", "fp16"):
        raise SrvError(f"--amp {amp!r}: use off, bf16 or fp16")
    results = run_bench(names, mode_list, batch, img_size, amp, steps, warmup, device)
    env = environment_line()
    table = Table("model", "mode", "img/s", "ms/step", "x baseline", "peak GiB", "compile s",
                  title=f"train step, batch {batch}, {img_size}px, amp {amp} ({env})")
    for r in results:
        table.add_row(r.model, r.mode, f"{r.img_per_s:,.0f}", f"{r.step_ms:.1f}",
                      f"{r.ratio:.3f}", "-" if r.peak_mem_gib is None else f"{r.peak_mem_gib:.1f}",
                      "-" if r.compile_s is None else f"{r.compile_s:.0f}")
    Console().print(table)
    if out is not None:
        atomic_write_json(out, {"environment": env, "results": as_dicts(results)})
        print(json.dumps({"written": str(out)}))


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)

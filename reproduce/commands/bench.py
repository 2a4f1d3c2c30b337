"""``srv bench``: training throughput of srv models next to a plain timm model, and of the
training engine on synthetic data, on a JPEG folder with timm's loader and with DALI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from reproduce.errors import ExitCode, SrvError, handle_errors


@handle_errors
def bench(
    models: Annotated[str, typer.Option(
        help="Comma list; the first is the baseline (timm:NAME for a plain timm model).")]
    = "timm:vit_small_patch16_224,vit-s-patch,vit-s-conv",
    modes: Annotated[str, typer.Option(help="Comma list of eager, compile.")] = "eager,compile",
    batch: Annotated[int, typer.Option(help="Batch size per step.", min=1)] = 256,
    img_size: Annotated[int, typer.Option(help="Input resolution.", min=8)] = 224,
    amp: Annotated[str, typer.Option(help="off, bf16 or fp16.")] = "bf16",
    steps: Annotated[int, typer.Option(help="Timed steps.", min=1)] = 30,
    warmup: Annotated[int, typer.Option(help="Warm-up steps (the first compiles).", min=0)] = 10,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
    pipelines: Annotated[str, typer.Option(
        help="Comma list: bare (the model step alone), engine (srv train's engine on synthetic "
             "batches on the device), timm / dali (the engine on a JPEG folder).")] = "bare",
    jpeg_folder: Annotated[Path | None, typer.Option(
        help="ImageNet-layout folder for the timm / dali pipelines (default: write an "
             "ImageNet-like one of --make-jpegs images to a temporary folder).")] = None,
    make_jpegs: Annotated[int, typer.Option(
        help="Images (~500x375, ~110 KB) to write when no --jpeg-folder is given.", min=1)] = 20000,
    workers: Annotated[int, typer.Option(
        help="DataLoader workers (timm pipeline; default 0: the CPU count, at most 16).",
        min=0)] = 0,
    channels_last: Annotated[bool, typer.Option(
        "--channels-last", help="Channels-last memory format (model and inputs).")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the results as JSON here.")]
    = None,
    log: Annotated[str, typer.Option(
        "--log", help="With --pipelines: also time each engine pipeline with these trackers "
                      "logging (tensorboard, mlflow, wandb; rows 'engine+tensorboard'), to "
                      "measure what tracking costs: the ratio of the two rows, and the share "
                      "of step time spent in the trackers' calls ('in trackers').")] = "none",
) -> None:
    """Training throughput (img/s) of srv models beside plain timm, eager and compiled.

    Train steps on synthetic data on the device, each model as a ratio to the first one
    measured in the same run; with --pipelines, the engine too, in steady state after a warm-up
    epoch (the epoch's start-up shown apart), each as a ratio to the bare step of the same model
    and settings."""
    import json

    from rich.console import Console
    from rich.table import Table

    from reproduce.models import get_entry
    from reproduce.training.bench import as_dicts, environment_line, run_bench
    from reproduce.training.runs import atomic_write_json

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
    from reproduce.training.bench import PIPELINES

    pipe_list = [p.strip() for p in pipelines.split(",") if p.strip()]
    if bad := [p for p in pipe_list if p not in PIPELINES]:
        raise SrvError(f"unknown pipeline {bad[0]!r}: use any of {', '.join(PIPELINES)}")
    if jpeg_folder is not None and not jpeg_folder.is_dir():
        raise SrvError(f"no folder at {jpeg_folder}: give an ImageNet-layout folder "
                       f"(train/<class>/*.JPEG, val/<class>/*.JPEG) or leave --jpeg-folder out")
    if "dali" in pipe_list:
        from reproduce.data import dali

        dali.require("the dali pipeline", "leave it out of --pipelines")
    from reproduce.recipes.recipe import Recipe
    from reproduce.training.tracking import require_trackers

    require_trackers(Recipe(log=log).log)  # the recipe's check names an unknown tracker
    if set(pipe_list) - {"bare"}:
        _bench_engine(names, mode_list, pipe_list, batch, img_size, amp, steps, warmup, device,
                      jpeg_folder, make_jpegs, workers, channels_last, out, log)
        return
    results = run_bench(names, mode_list, batch, img_size, amp, steps, warmup, device,
                        channels_last)
    env = environment_line()
    table = Table("model", "mode", "img/s", "ms/step", "x baseline", "peak GiB", "compile s",
                  title=f"train step, batch {batch}, {img_size}px, amp {amp}"
                        f"{', channels-last' if channels_last else ''} ({env})")
    for r in results:
        table.add_row(r.model, r.mode, f"{r.img_per_s:,.0f}", f"{r.step_ms:.1f}",
                      f"{r.ratio:.3f}", "-" if r.peak_mem_gib is None else f"{r.peak_mem_gib:.1f}",
                      "-" if r.compile_s is None else f"{r.compile_s:.0f}")
    Console().print(table)
    if out is not None:
        atomic_write_json(out, {"environment": env, "channels_last": channels_last,
                                "results": as_dicts(results)})
        print(json.dumps({"written": str(out)}))


def _bench_engine(names: list[str], modes: list[str], pipelines: list[str], batch: int,
                  img_size: int, amp: str, steps: int, warmup: int, device: str,
                  jpeg_folder: Path | None, make_jpegs: int, workers: int,
                  channels_last: bool, out: Path | None, log: str = "none") -> None:
    import json
    import os
    import sys
    import tempfile

    from rich.console import Console
    from rich.table import Table

    from reproduce.training.bench import as_dicts, environment_line, run_engine_bench
    from reproduce.training.runs import atomic_write_json

    workers = workers or min(os.cpu_count() or 1, 16)
    with tempfile.TemporaryDirectory() as tmp:
        if jpeg_folder is None and set(pipelines) & {"timm", "dali"}:
            from reproduce.data.jpeg_folder import JpegFolderSpec, write_jpeg_folder

            classes = 100
            per_class = max(make_jpegs // classes, 1)
            print(f"writing {classes * per_class} ImageNet-like JPEGs to {tmp} ...", flush=True)
            jpeg_folder = write_jpeg_folder(Path(tmp) / "jpegs", JpegFolderSpec(
                classes=classes, train_per_class=per_class, val_per_class=2),
                processes=workers)
        bare, engine = run_engine_bench(names, modes, pipelines, batch, img_size, amp, steps,
                                        warmup, jpeg_folder, workers, device, channels_last,
                                        log)
    env = environment_line()
    table = Table("model", "mode", "pipeline", "img/s", "data wait", "x bare step",
                  "epoch start s", "img/s with start", "in trackers",
                  title=f"training (steady state), batch {batch}, {img_size}px, amp {amp}"
                        f"{', channels-last' if channels_last else ''} ({env}; "
                        f"{workers} loader workers)")
    for r in bare:
        table.add_row(r.model, r.mode, "bare", f"{r.img_per_s:,.0f}", "-", "1.000", "-", "-",
                      "-")
    for e in engine:
        if e.error:
            table.add_row(e.model, e.mode, e.pipeline, "failed", "-", "-", "-", "-", "-")
            continue
        table.add_row(e.model, e.mode, e.pipeline, f"{e.img_per_s:,.0f}",
                      f"{100 * e.data_wait_frac:.0f}%", f"{e.ratio_to_bare:.3f}",
                      f"{e.first_batch_s:.2f}", f"{e.epoch_img_per_s:,.0f}",
                      "-" if e.tracking_frac is None else f"{100 * e.tracking_frac:.3f}%")
    Console().print(table)
    for e in engine:
        if e.error:
            print(f"srv: error: the {e.pipeline} pipeline of {e.model} ({e.mode}) failed: "
                  f"{e.error}", file=sys.stderr)
    if out is not None:
        from dataclasses import asdict

        atomic_write_json(out, {"environment": env, "workers": workers,
                                "channels_last": channels_last,
                                "bare": as_dicts(bare), "engine": [asdict(e) for e in engine]})
        print(json.dumps({"written": str(out)}))
    if any(e.error for e in engine):
        raise typer.Exit(ExitCode.FAILED)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)

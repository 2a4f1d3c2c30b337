"""``srv eval``: top-1 / top-5 of a run directory or checkpoint on a data set."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from reproduce.errors import SrvError, handle_errors


class Weights(StrEnum):
    """Which weights of a run: the final epoch's, the best epoch's, or the EMA's."""

    last = "last"
    best = "best"
    ema = "ema"


class Format(StrEnum):
    table = "table"
    json = "json"


@handle_errors
def evaluate(
    target: Annotated[Path, typer.Argument(help="A run directory or a .pt checkpoint.")],
    weights: Annotated[Weights, typer.Option(
        help="last (the final epoch, as result.json reports), best or ema.")] = Weights.last,
    data: Annotated[str | None, typer.Option(help="Data folder (default: the run's).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Data set (default: the run's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Eval batch size.")] = None,
    img_size: Annotated[int | None, typer.Option(help="Eval resolution.")] = None,
    crop_pct: Annotated[float | None, typer.Option(help="Eval crop fraction.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    fmt: Annotated[Format, typer.Option("--format", help="table or json.")] = Format.table,
) -> None:
    """Evaluate trained weights: top-1, top-5, number of images and the eval transform."""
    import dataclasses
    import json

    from reproduce.data.build import build_val_loader
    from reproduce.data.datasets import build_datasets
    from reproduce.training.config import RunConfig
    from reproduce.training.loop import evaluate
    from reproduce.training.resume import load_checkpoint_model
    from reproduce.utils.distributed import cleanup, init_distributed

    if not target.exists():
        raise SrvError(f"no run directory or checkpoint at {target}: give a runs/<name>-<hash> "
                       f"folder or a .pt file")
    info = init_distributed(device)
    try:
        model, cfg_dict, which = load_checkpoint_model(target, weights.value, info.device)
        cfg = RunConfig.from_dict(cfg_dict)
        changes = {k: v for k, v in dict(data_path=data, dataset=dataset, batch_size=batch_size,
                                         img_size=img_size, crop_pct=crop_pct).items()
                   if v is not None}
        recipe = dataclasses.replace(cfg.recipe, train_subset=0, **changes)
        sets = build_datasets(recipe, train=False)
        metrics = evaluate(model, build_val_loader(sets.val, recipe, info), info, recipe)
    finally:
        cleanup()
    record = {"target": str(target), "model": cfg.model, "weights": which["weights"],
              "checkpoint": which["checkpoint"], "epoch": which["epoch"],
              "top1": metrics["top1"], "top5": metrics["top5"], "loss": metrics["loss"],
              "n_images": metrics["n"], "data": sets.description,
              "eval_transform": sets.eval_transform}
    if not info.is_main:
        return
    if fmt == Format.json:
        print(json.dumps(record, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("key", "value", title=f"srv eval {target}")
    for key, value in record.items():
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)

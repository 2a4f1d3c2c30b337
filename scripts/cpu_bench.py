"""What the CPU offers a grid cell (issue 28 (2)): real ``srv train`` cells, timed as ratios
against fp32 eager (1 thread, 1 job, evaluation every epoch) measured in the same run.

Variants, each a child ``srv train`` in a fresh runs folder (``--log none``; the machine should
be otherwise idle):

* ``fp32``: the baseline, ``amp = off``, eager, ``OMP_NUM_THREADS=1``;
* ``bf16``: ``amp = bf16`` (CPU autocast; AVX-512 BF16 where the CPU has it);
* ``compile``, ``bf16-compile``: ``compile = true`` (torch.compile, inductor's C++ backend), its
  compilation inside the cell's time, as a grid pays it;
* ``threads2``: one cell with 2 threads;
* ``jobs2``: two cells at once (seeds +0 and +1), 1 thread each (``srv ablate --jobs 2``).

Per cell: the process's wall time (start-up, data, training, evaluation, checkpoints), the
steady-state training time per epoch (epochs after the first), the evaluation + checkpoint time
per epoch (the engine's ``wall_time_s`` minus ``train_time_s``) and start-up. Ratios are speed-ups
(> 1: faster): ``cell`` of the walls, ``train`` of the steady epochs; for the two ways of using 2
cores, ``cells_per_hour`` against one 1-thread cell (jobs2: 2 cells per pair wall).

Evaluating every ``k`` epochs is not an engine option: its ratio is **modelled** from the
baseline's measured parts, at the cell the recipe defines (its ``train_subset`` and ``epochs``,
before the bench's shorter ``--epochs``): start-up + epochs x train images x seconds per image
+ ceil(epochs / k) x one evaluation (the last epoch is always evaluated).

    python scripts/cpu_bench.py --out tables/benchmarks/cpu-cells.json
    python scripts/cpu_bench.py --models vit-mini-conv --variants fp32,bf16 --out /tmp/b.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VARIANTS: dict[str, dict[str, Any]] = {
    "fp32": {"amp": "off", "compile": False, "threads": 1, "jobs": 1},
    "bf16": {"amp": "bf16", "compile": False, "threads": 1, "jobs": 1},
    "compile": {"amp": "off", "compile": True, "threads": 1, "jobs": 1},
    "bf16-compile": {"amp": "bf16", "compile": True, "threads": 1, "jobs": 1},
    "threads2": {"amp": "off", "compile": False, "threads": 2, "jobs": 1},
    "jobs2": {"amp": "off", "compile": False, "threads": 1, "jobs": 2},
}
BASELINE = "fp32"


@dataclass
class Cell:
    """One timed ``srv train`` cell."""

    model: str
    variant: str
    seed: int
    ok: bool
    wall_s: float  # the process, start to exit
    startup_s: float | None = None  # wall_s minus the engine's epoch loop (imports, data, model)
    epoch_train_s: float | None = None  # steady state: mean over the epochs after the first
    epoch_eval_s: float | None = None  # evaluation + checkpoint per epoch
    first_epoch_s: float | None = None  # training time of epoch 1 (compilation, warm-up)
    img_per_s: float | None = None  # steady-state training images per second
    train_images: int | None = None  # per epoch
    top1: float | None = None
    error: str | None = None


def _child(model: str, recipe: str, sets: list[str], variant: dict[str, Any], seed: int,
           runs: Path, data: str | None) -> tuple[list[str], dict[str, str]]:
    cmd = [sys.executable, "-m", "reproduce", "train", model, "--recipe", recipe,
           "--runs-dir", str(runs), "--no-progress", "--log", "none"]
    for item in [*sets, f"amp={variant['amp']}", f"compile={str(variant['compile']).lower()}",
                 f"seed={seed}"]:
        cmd += ["--set", item]
    if data:
        cmd += ["--data", data]
    threads = str(variant["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return cmd, env


def read_cell(model: str, variant: str, seed: int, runs: Path, wall: float, rc: int,
              output: str) -> Cell:
    """The timings of a finished child from its run folder (``metrics.jsonl``, result.json)."""
    found = sorted(runs.glob("*/result.json"))
    if rc != 0 or not found:
        tail = " | ".join(output.strip().splitlines()[-3:])
        return Cell(model, variant, seed, False, wall, error=f"exit {rc}: {tail}")
    result = json.loads(found[0].read_text())
    rows = [json.loads(line) for line in (found[0].parent / "metrics.jsonl").read_text()
            .splitlines() if line.strip()]
    steady = rows[1:] or rows
    train = sum(r["time_s"] for r in steady) / len(steady)
    config = json.loads((found[0].parent / "config.json").read_text())
    per_epoch = int(config["derived"].get("steps_per_epoch", 0)) * int(config["batch_size"])
    return Cell(model, variant, seed, True, wall,
                startup_s=wall - float(result["wall_time_s"]),
                epoch_train_s=train,
                epoch_eval_s=(float(result["wall_time_s"]) - float(result["train_time_s"]))
                / max(len(rows), 1),
                first_epoch_s=rows[0]["time_s"],
                img_per_s=sum(r["img_per_s"] for r in steady) / len(steady),
                train_images=per_epoch or None, top1=result.get("top1"))


def run_variant(model: str, name: str, recipe: str, sets: list[str], seed: int, work: Path,
                data: str | None) -> list[Cell]:
    """The cells of one variant (two at once for ``jobs2``), each in its own runs folder."""
    variant = VARIANTS[name]
    procs = []
    start = time.perf_counter()
    for j in range(variant["jobs"]):
        runs = work / f"{model}-{name}-{j}"
        cmd, env = _child(model, recipe, sets, variant, seed + j, runs, data)
        procs.append((seed + j, runs, subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            cwd=ROOT)))
    cells = []
    for cell_seed, runs, proc in procs:
        output, _ = proc.communicate()
        cells.append(read_cell(model, name, cell_seed, runs, time.perf_counter() - start,
                               proc.returncode, output))
    return cells


def eval_every_ratio(base: Cell, k: int, cell_epochs: int, cell_images: int) -> float | None:
    """The modelled speed-up of evaluating every ``k`` epochs over every epoch, for a cell of
    ``cell_epochs`` epochs of ``cell_images`` training images, from the baseline's parts."""
    if not base.ok or not base.img_per_s or base.epoch_eval_s is None or base.startup_s is None:
        return None
    train = cell_epochs * cell_images / base.img_per_s

    def cell(every: int) -> float:
        return base.startup_s + train + math.ceil(cell_epochs / every) * base.epoch_eval_s

    return cell(1) / cell(k)


def ratios(cells: list[Cell]) -> list[dict[str, Any]]:
    """Each variant's speed-ups over the same model's fp32 baseline (1 thread, 1 job)."""
    out = []
    for model in dict.fromkeys(c.model for c in cells):
        mine = [c for c in cells if c.model == model]
        base = next((c for c in mine if c.variant == BASELINE and c.ok), None)
        for name in dict.fromkeys(c.variant for c in mine):
            group = [c for c in mine if c.variant == name]
            row: dict[str, Any] = {"model": model, "variant": name, **VARIANTS[name],
                                   "ok": all(c.ok for c in group)}
            if base is None or not row["ok"]:
                out.append({**row, "cell": None, "train": None, "cells_per_hour": None})
                continue
            wall = max(c.wall_s for c in group)
            train = sum(c.epoch_train_s or 0.0 for c in group) / len(group)
            row.update(cell=base.wall_s / wall if name != "jobs2" else None,
                       train=base.epoch_train_s / train if train else None,
                       cells_per_hour=len(group) * base.wall_s / wall)
            out.append(row)
    return out


def _x(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def environment() -> str:
    """torch version, threads and CPU model (as srv bench reports them)."""
    import torch

    from reproduce.training.runs import cpu_model

    return f"torch {torch.__version__}, {os.cpu_count()} CPUs of {cpu_model()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="write the JSON here")
    parser.add_argument("--models", default="vit-mini-patch,vit-mini-conv")
    parser.add_argument("--recipe", default="fmnist")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma list of {', '.join(VARIANTS)} (fp32 always runs first)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each timed cell")
    parser.add_argument("--train-subset", type=int, default=5000,
                        help="training images of each timed cell (0: the recipe's)")
    parser.add_argument("--eval-every", default="2,5", help="k values of the modelled ratio")
    parser.add_argument("--seed", type=int, default=900, help="seed of the timed cells")
    parser.add_argument("--data", help="data folder (default: the recipe's)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="another recipe override for every cell (repeatable)")
    args = parser.parse_args(argv)

    from reproduce.recipes.recipe import apply_overrides, load_recipe, parse_overrides

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    if bad := [v for v in names if v not in VARIANTS]:
        parser.error(f"unknown variant {bad[0]!r}: use {', '.join(VARIANTS)}")
    names = [BASELINE] + [v for v in names if v != BASELINE]
    sets = [*args.sets, f"epochs={args.epochs}",
            f"warmup_epochs={min(1, args.epochs)}"]
    if args.train_subset:
        sets.append(f"train_subset={args.train_subset}")
    from reproduce.training.builders import steps_per_epoch

    recipe = apply_overrides(load_recipe(args.recipe)[0], parse_overrides(args.sets))
    parse_overrides(sets)  # a bad --set fails here, not in every child
    cell_images = steps_per_epoch(recipe)[0] * recipe.batch_size  # the recipe's own cell
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="srv-cpu-bench-") as tmp:
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            for name in names:
                done = run_variant(model, name, args.recipe, sets, args.seed, Path(tmp),
                                   args.data)
                cells += done
                for c in done:
                    print(f"{model:<16} {name:<13} seed {c.seed}: "
                          + (f"{c.wall_s:7.1f} s wall, {c.epoch_train_s:6.2f} s/epoch train, "
                             f"{c.epoch_eval_s:5.2f} s/epoch eval, top-1 {c.top1}" if c.ok
                             else f"failed ({c.error})"), flush=True)
    table = ratios(cells)
    every = []
    for c in cells:
        if c.variant == BASELINE and c.ok:
            for k in (int(x) for x in args.eval_every.split(",") if x.strip()):
                every.append({"model": c.model, "k": k, "cell_epochs": recipe.epochs,
                              "cell_train_images": cell_images,
                              "ratio": eval_every_ratio(c, k, recipe.epochs, cell_images),
                              "modelled": True})
    report = {
        "environment": environment(),
        "baseline": "fp32 eager, 1 thread, 1 job, evaluation every epoch, same run",
        "config": {"recipe": args.recipe, "sets": sets, "models": args.models,
                   "seed": args.seed},
        "ratios": table, "eval_every": every, "cells": [asdict(c) for c in cells],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for row in table:
        print(f"{row['model']:<16} {row['variant']:<13} cell {_x(row['cell'])}  train "
              f"{_x(row['train'])}  cells/h {_x(row['cells_per_hour'])}")
    for e in every:
        print(f"{e['model']:<16} eval every {e['k']} (modelled, {e['cell_epochs']} epochs of "
              f"{e['cell_train_images']:,} images): {_x(e['ratio'])}")
    return 0 if all(c.ok for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())

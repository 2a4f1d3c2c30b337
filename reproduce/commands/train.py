"""``srv train``: train a catalogue model with a recipe, resuming when run again."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from reproduce.commands._options import LogOpt, RunsDirOpt
from reproduce.errors import ExitCode, SrvError, handle_errors

RECIPE_HELP = ("Recipe name in recipes/ (srv recipes) or a .toml path; default: the model's "
               "own (mini for vit-mini-*, xiao for vitp/vitc, xiao-36gf at 36GF, deit "
               "otherwise).")


def collect_overrides(
    sets: list[str] | None, **flags: Any
) -> dict[str, Any]:
    """Typed overrides from ``--set key=value`` and the common flags (flags win)."""
    from reproduce.recipes.recipe import parse_overrides

    overrides = parse_overrides(sets or [])
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return overrides


@handle_errors
def train(
    model: Annotated[str, typer.Argument(help="Catalogue model, e.g. vit-mini-conv (srv models).")],
    recipe: Annotated[str | None, typer.Option("--recipe", "-r", help=RECIPE_HELP)] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs.")] = None,
    lr: Annotated[float | None, typer.Option(help="Base lr (scaled by the recipe's rule).")] = None,
    warmup_epochs: Annotated[float | None, typer.Option(help="Warmup epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="GLOBAL batch size.")] = None,
    accum_steps: Annotated[int | None, typer.Option(
        min=1, help="Gradient accumulation: micro-batches per optimizer update, so the global "
                    "batch holds on fewer GPUs (per-device batch = global / world size; each "
                    "forward holds per-device / N images).")] = None,
    opt: Annotated[str | None, typer.Option(
        help="Optimizer: adamw, sgd, sam, sam-adamw, or any timm name.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Weight decay.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    img_size: Annotated[int | None, typer.Option(help="Input resolution.")] = None,
    data: Annotated[str | None, typer.Option(
        help="Data folder (imagefolder / cifar; fashion-mnist: its four IDX files, default "
             "/usr/share/datasets/fashion-mnist).")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="digits, fashion-mnist, imagefolder, synthetic, cifar10, cifar100.")] = None,
    amp: Annotated[str | None, typer.Option(help="off, bf16 or fp16.")] = None,
    deterministic: Annotated[bool, typer.Option(
        "--deterministic", help="Deterministic GPU kernels (no cuDNN autotuning, no TF32): "
                                "a resumed GPU run is then bitwise equal, at some speed "
                                "cost (--set deterministic=true).")] = False,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="Any recipe key: --set drop_path=0.2 (repeatable).")] = None,
    log: LogOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    run_dir: Annotated[Path | None, typer.Option(
        help="Use exactly this run directory instead of <runs-dir>/<name>-<hash>.")] = None,
    name: Annotated[str | None, typer.Option(help="Run name prefix (default: the model).")] = None,
    resume: Annotated[Path | None, typer.Option(
        help="Continue the run in this folder (or this last.pt) with its recipe: weights, "
             "optimizer, EMA, schedule position (timm's --resume). Only --epochs may change: "
             "a longer schedule continues on the new total, as a new run.")] = None,
    initial_checkpoint: Annotated[Path | None, typer.Option(
        help="Start a new run from these weights (a run folder's last.pt or a .pt) with a "
             "fresh optimizer and schedule: finetuning (timm's --initial-checkpoint). Its "
             "content hash is part of the run's identity.")] = None,
    restart: Annotated[bool, typer.Option(
        help="Move an existing run aside (<dir>.old-<time>) and start again.")] = False,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", help="Progress bar (default: only on a terminal).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check that the run can start and print its lr at a few epochs, the "
                          "EMA's decay, its cost (training images; minutes on this machine "
                          "for a CPU-scale run, else GPU-hours), the resolved "
                          "config and run directory; train nothing. Under torchrun only rank "
                          "0 prints.")] = False,
    img_per_s: Annotated[str | None, typer.Option(
        help="Training img/s per GPU for the dry run's GPU-hours: one figure, or per model "
             "(vit-s-conv=2668); default: the srv bench figure for the model in "
             "tables/benchmarks/*.json.")] = None,
) -> None:
    """Train MODEL with a recipe; running the same command again resumes the run.

    A finished run is not retrained (--restart trains it again); a diverged run exits with
    code 3; Ctrl-C stops it resumably (exit 130). A recipe's warmup longer than a shorter
    --epochs is scaled down with a note, so srv train vit-mini-conv --epochs 1 is a quick
    smoke test."""
    from reproduce.training.config import resolve_config

    overrides = collect_overrides(
        sets, epochs=epochs, lr=lr, warmup_epochs=warmup_epochs, batch_size=batch_size,
        accum_steps=accum_steps, opt=opt,
        weight_decay=weight_decay, seed=seed, img_size=img_size, data_path=data,
        dataset=dataset, amp=amp, deterministic=True if deterministic else None, log=log)
    if resume is not None and (initial_checkpoint is not None or restart):
        raise SrvError("--resume continues a run; --initial-checkpoint and --restart start "
                       "one afresh: give only one of them")
    if resume is not None:
        from reproduce.training.resume import resume_config

        cfg, run_dir = resume_config(model, recipe, overrides, name, resume, run_dir)
    else:
        cfg = resolve_config(model, recipe, overrides, name=name)
    if initial_checkpoint is not None:
        from reproduce.training.resume import initial_config

        cfg = initial_config(cfg, initial_checkpoint)
    if dry_run:
        from reproduce.commands._options import benchmark_folders
        from reproduce.training.dry_run import dry_run as describe_run

        lines = describe_run(cfg, run_dir, runs_dir, img_per_s, benchmark_folders())
        if lines is not None:  # None: under torchrun every rank checks, rank 0 speaks
            print("\n".join(lines))
        return
    import os

    from reproduce.training.engine import train as run_training
    from reproduce.utils.console import plural

    try:
        outcome = run_training(cfg, runs_root=runs_dir, restart=restart, run_dir=run_dir,
                               progress=progress)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") == "0":
            print("\ninterrupted: rerun the same command to resume", flush=True)
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    kept = "" if outcome.retrained else "already {}, not retrained (--restart to redo): "
    if not outcome.is_main:
        pass
    elif outcome.status == "completed" and outcome.result:
        res = outcome.result
        print(f"{cfg.model}: {kept.format('completed')}top-1 {res['top1']:.2f}%  top-5 "
              f"{res['top5']:.2f}%  ({plural(res['epochs'], 'epoch')})  {outcome.run_dir}")
    elif outcome.status == "diverged":
        print(f"{cfg.model}: {kept.format('diverged')}diverged ({outcome.reason})  "
              f"{outcome.run_dir}")
    raise typer.Exit(outcome.exit_code)


def register(app: typer.Typer) -> None:
    app.command("train")(train)

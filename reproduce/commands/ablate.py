"""``srv ablate``: run one of the paper's experiments (a grid of runs) resumably, then its table."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from reproduce.commands._grid_output import print_plan, print_summary, refuse_unrunnable
from reproduce.commands._options import LogOpt, RunsDirOpt, benchmark_folders
from reproduce.errors import ExitCode, handle_errors
from reproduce.utils.console import plural


class Backend(StrEnum):
    local = "local"
    torchrun = "torchrun"
    slurm = "slurm"


SLURM = "SLURM (--backend slurm)"


def _preset_help() -> str:
    """The --preset help of srv ablate and srv table: the scales recipes/grids/*.toml define,
    with the seeds a verdict needs from the claims file's [design] (one source)."""
    from reproduce.recipes.design import design_seeds, seeds_arg

    seeds = seeds_arg(design_seeds())
    return (f"Scale: mini (digits on CPU, minutes), quick (8 epochs on digits, seeds {seeds}) or "
            f"full (ImageNet, the paper's recipe; one seed, so srv claims gives no verdict from "
            f"it: add --seeds {seeds}, the claims file's design seeds); default: the grid's "
            f"default (mini). quick is the claims' scale (the stem grid's is the main job; "
            f"quick-linear its conv-linear arm); the stem grid's regime-cal is issue 28's "
            f"calibration on Fashion-MNIST (seeds 300-302; scripts/regime_criterion.py reads "
            f"it).")


PRESET_HELP = _preset_help()


def load_cli_grid(name: str, preset: str | None, seeds: str | None, axis: list[str] | None,
                  sets: list[str] | None, samples: int | None,
                  **flags: object):  # noqa: ANN201
    """The grid with the command line's changes (shared by ``srv ablate`` and ``srv table``);
    ``flags`` (``data_path=``, ``dataset=``, ``batch_size=``, ``accum_steps=``) override every
    cell, after ``--set``."""
    from reproduce.recipes.grids import load_grid, parse_axis_option, parse_seeds
    from reproduce.recipes.recipe import parse_overrides

    overrides = parse_overrides(sets or [])
    overrides.update({k: v for k, v in flags.items() if v is not None})
    return load_grid(name, preset=preset, seeds=parse_seeds(seeds) if seeds else None,
                     axes=parse_axis_option(axis or []), overrides=overrides,
                     samples=samples)


@handle_errors
def ablate(
    name: Annotated[str, typer.Argument(
        help="Grid name in recipes/grids/ (stem, warmup, lr, optimizer, stride, epochs, "
             "lr-wd-edf) or a .toml path.")],
    preset: Annotated[str | None, typer.Option(help=PRESET_HELP)] = None,
    seeds: Annotated[str | None, typer.Option(
        help="Seeds, comma-separated or a range: 0,1,2 or 0-4 (default: the preset's).")] = None,
    axis: Annotated[list[str] | None, typer.Option(
        "--axis", help="Keep only some values of an axis, or give new ones for a recipe-key "
                       "axis: --axis stem=patch,conv --axis lr=1e-3,3e-3 (repeatable).")] = None,
    samples: Annotated[int | None, typer.Option(
        min=1, help="Number of random (lr, wd) samples of lr-wd-edf.")] = None,
    data: Annotated[str | None, typer.Option(
        help="Data folder for every cell (ImageNet layout: train/ and val/ with a folder per "
             "class); the full presets need it; fashion-mnist: a folder of its four IDX files. "
             "Checked before anything is launched.")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="digits, fashion-mnist, imagefolder, synthetic, cifar10, cifar100 (every "
             "cell).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        min=1, help="GLOBAL batch size of every cell.")] = None,
    accum_steps: Annotated[int | None, typer.Option(
        min=1, help="Gradient accumulation in every cell: each device's batch in N micro-batches "
                    "(same global batch, schedule and run folder; for fewer GPUs).")] = None,
    sets: Annotated[list[str] | None, typer.Option(
        "--set", help="Recipe override for every cell: --set epochs=5 (repeatable).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List every cell, its status (pending / partial / running / done / "
                          "diverged / failed) and run folder; check that each unfinished cell "
                          "can start as srv train --dry-run does (data, model, optimizer, "
                          "schedule, EMA, transforms, the engine's refusals); print what the "
                          "backend would launch (torchrun commands, SLURM parameters) and the "
                          "cost (images, GPU-hours, seeds for a verdict); train nothing.")
    ] = False,
    img_per_s: Annotated[str | None, typer.Option(
        help="Training img/s per GPU for the dry run's GPU-hours: one figure, or per model "
             "(vit-s-conv=2668,vit-s-patch=4037); default: the srv bench figure for the model "
             "in tables/benchmarks/*.json.")] = None,
    retry_failed: Annotated[bool, typer.Option(
        "--retry-failed", help="Rerun failed cells (resuming from their checkpoint).")] = False,
    retry_diverged: Annotated[bool, typer.Option(
        "--retry-diverged", help="Retrain diverged cells from scratch (a divergence is a "
                                 "result, kept by default).")] = False,
    fail_fast: Annotated[bool, typer.Option(
        "--fail-fast", help="Stop at the first failed cell.")] = False,
    max_failures: Annotated[int | None, typer.Option(
        min=1, help="Stop after this many failed cells.")] = None,
    backend: Annotated[Backend, typer.Option(
        case_sensitive=False, help="local: cells one by one in this process; torchrun: one "
        "torchrun launch per cell (--nproc GPUs); slurm: a submitit job array.")
    ] = Backend.local,
    nproc: Annotated[int, typer.Option(
        min=1, help="Processes (GPUs) per node of a cell for torchrun / slurm.")] = 1,
    nnodes: Annotated[int, typer.Option(
        min=1, help="Nodes per cell: torchrun (run the same srv ablate on every node, with "
                    "--node-rank and --rdzv-endpoint) or slurm (an array of multi-node jobs).")
    ] = 1,
    node_rank: Annotated[int, typer.Option(
        min=0, help="torchrun: this node's rank (0 holds the cells' locks).")] = 0,
    rdzv_endpoint: Annotated[str | None, typer.Option(
        help="torchrun: HOST:PORT of the c10d rendezvous (on node 0), the same on every node; "
             "needed with --nnodes > 1. Node 0 also tells the others its cell decisions at "
             "PORT + 1.")] = None,
    jobs: Annotated[int, typer.Option(
        min=1, help="local: cells trained at once, each an srv train process with CPUs / "
                    "jobs threads (on a CPU, --jobs 2 on 2 cores trains small models faster "
                    "than one process with 2 threads) and, on a GPU machine, a GPU of its own "
                    "(at most one job per visible GPU).")] = 1,
    share_gpus: Annotated[bool, typer.Option(
        "--share-gpus", help="local: let --jobs exceed the visible GPUs (cells share them).")
    ] = False,
    log: LogOpt = None,
    runs_dir: RunsDirOpt = Path("runs"),
    tables_dir: Annotated[Path | None, typer.Option(
        help="Where the table and plot go; default: tables/ in the current directory "
             "($SRV_TABLES_DIR).")] = None,
    table: Annotated[bool, typer.Option(
        "--table/--no-table", help="Write and print the grid's table and plot at the end.")
    ] = True,
    force: Annotated[bool, typer.Option(
        "--force", help="Let the table mix results of different code versions.")] = False,
    claims: Annotated[bool, typer.Option(
        "--claims/--no-claims", help="With the table: the verdicts of the paper's claims this "
                                     "grid tests (srv claims; also writes tables/claims.md).")
    ] = True,
    slurm_partition: Annotated[str | None, typer.Option(rich_help_panel=SLURM)] = None,
    slurm_account: Annotated[str | None, typer.Option(rich_help_panel=SLURM)] = None,
    slurm_time: Annotated[int, typer.Option(
        help="Minutes per job (then it is requeued and resumes).", rich_help_panel=SLURM)
    ] = 24 * 60,
    slurm_cpus: Annotated[int, typer.Option(help="CPUs per task.", rich_help_panel=SLURM)] = 10,
    slurm_mem_gb: Annotated[int | None, typer.Option(rich_help_panel=SLURM)] = None,
    slurm_parallel: Annotated[int, typer.Option(
        help="Array tasks running at once.", rich_help_panel=SLURM)] = 16,
    slurm_cluster: Annotated[str | None, typer.Option(
        help="submitit executor: slurm (the default; needs sbatch and srun on PATH), local "
             "(every task a process on this machine, no SLURM) or debug (in this process).",
        rich_help_panel=SLURM)] = None,
    wait: Annotated[bool, typer.Option(
        "--wait", help="Wait for the SLURM jobs, then write the table.", rich_help_panel=SLURM)
    ] = False,
) -> None:
    """Run a grid of the paper (every cell an `srv train` run), then write its table.

    Rerunning skips finished cells and resumes partial ones; a lock per cell lets several
    workers share a grid. Exits 1 if any cell failed (after running all the others).
    """
    import os

    from reproduce import experiments as ab
    from reproduce.errors import SrvError
    from reproduce.training.tracking import require_trackers

    if backend is Backend.local and nnodes > 1:
        raise SrvError(f"--nnodes {nnodes} needs --backend torchrun or slurm")
    nodes = ab.Nodes(nnodes, node_rank, rdzv_endpoint) if backend is Backend.torchrun else None
    slurm = ab.SlurmOptions(
        partition=slurm_partition, account=slurm_account, timeout_min=slurm_time,
        gpus_per_task_node=nproc, nodes=nnodes, cpus_per_task=slurm_cpus, mem_gb=slurm_mem_gb,
        parallelism=slurm_parallel, cluster=slurm_cluster)
    if backend is Backend.slurm and not dry_run:
        ab.slurm_executor(slurm)  # no sbatch here: one line, before anything else
    sets = [*(sets or []), *([f"log={log}"] if log else [])]
    grid = load_cli_grid(name, preset, seeds, axis, sets, samples, data_path=data,
                         dataset=dataset, batch_size=batch_size, accum_steps=accum_steps)
    states = ab.plan(grid, runs_dir)
    require_trackers([s.cfg.recipe.log for s in states])
    title = (f"grid {grid.name} ({grid.scale}); recipe {grid.recipe}; "
             f"{plural(len(states), 'cell')}")
    world = 1 if backend is Backend.local else nproc * nnodes
    unrunnable = ab.check_cells(states, world)
    options = ab.RunOptions(backend=backend.value, nproc=nproc, jobs=jobs, gpus=(),
                            share_gpus=share_gpus, retry_failed=retry_failed,
                            retry_diverged=retry_diverged, fail_fast=fail_fast,
                            max_failures=max_failures, nodes=nodes)
    if dry_run and os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 speaks
        print_plan(grid, states, title)
        if not unrunnable:
            print("\n".join(ab.launch_lines(grid, states, runs_dir, options, slurm)))
            from reproduce.training.cost import StepTimes

            print("\n".join(ab.cost_lines(grid, states, options, benchmark_folders(),
                                          img_per_s, StepTimes(runs_dir),
                                          slurm_parallel if backend is Backend.slurm else 1,
                                          world)))
    if unrunnable:
        refuse_unrunnable(unrunnable, grid, len(states))
    if dry_run:
        return
    from reproduce.experiments.overview import write_grid_index  # srv runs names the cells

    write_grid_index(runs_dir, grid.name, grid.preset,
                     {s.run_dir.name: s.cell.describe() for s in states})
    if backend is Backend.local:
        options.gpus = ab.local_gpus(states, jobs, share_gpus)
    print(title, flush=True)
    if backend is Backend.slurm:
        _slurm(name, grid, states, runs_dir, options, slurm, wait)
        if not wait:
            return
        summary = ab.Summary([s.refresh() for s in states])
        summary.failures = [(s, str(s.info.get("reason"))) for s in summary.states
                            if s.status == "failed"]
    else:
        try:
            summary = ab.run_grid(states, runs_dir, options, progress=ab.GridProgress())
        except KeyboardInterrupt:
            print(f"\ninterrupted: finished cells are kept; run the same command again to "
                  f"resume (srv ablate {name} ... --dry-run shows where each cell stands)")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
    print_summary(summary, name)
    if options.follower:
        table = claims = False  # node 0 writes the table
    if table and any(s.status in ("done", "diverged") for s in summary.states):
        from reproduce.commands._records import output_dir
        from reproduce.experiments.export import grid_records
        from reproduce.report.tables import report

        out_dir = output_dir(runs_dir, tables_dir)
        rep = report(grid, grid_records(grid, runs_dir, summary.states), out_dir, force=force)
        print()
        print(rep.texts["markdown"], end="")
        written = list(rep.paths)
        if claims:
            written += _claims(grid.name, runs_dir, out_dir, force, grid.preset)
        print("\nwrote " + ", ".join(str(p) for p in written))
    if summary.failures or summary.stopped_early:
        raise typer.Exit(ExitCode.FAILED)


def _claims(grid_name: str, runs_dir: Path, out_dir: Path, force: bool,
            preset: str = "") -> list[Path]:
    """Print the verdicts of the claims whose evidence is this grid, at the scale whose claims
    file names ``preset`` (else the first scale's), evaluated with all the others (so the Holm
    family is that of srv claims), and write the full tables/claims.md; nothing for a grid no
    claim reads."""
    from reproduce.commands._records import record_index, write_claims
    from reproduce.errors import SrvError
    from reproduce.report import claims as cl
    from reproduce.report.claims import scales

    sets = scales.load_scales(cl.claims_paths())
    if not any(c.grid == grid_name for cs in sets for c in cs.claims):
        return []
    index = record_index(runs_dir, None, scales.diversity_grids(sets))
    reports = scales.evaluate_scales(index, sets, force=force)
    rep = next((r for r in reports if preset in r.scale.presets), reports[0])
    print()
    print(cl.render_markdown(rep, only={c.claim.id for c in rep.results
                                        if c.claim.grid == grid_name}), end="")
    try:
        return [write_claims(scales.render_scales(reports), *scales.evidence(reports),
                             Path(out_dir) / "claims.md", force)]
    except SrvError as err:  # the grid trained fine: say why claims.md was kept, go on
        print(f"srv: note: {err}")
        return []


def _slurm(name, grid, states, runs_dir, options, slurm, wait: bool) -> None:  # noqa: ANN001
    from reproduce import experiments as ab

    jobs = ab.submit_slurm(grid, states, runs_dir, options, slurm)
    if not jobs:
        print("nothing to submit: every cell is finished, diverged, failed (use "
              "--retry-failed) or running")
        return
    print(f"submitted {plural(len(jobs), 'cell')} as a job array: "
          f"{jobs[0].job_id.split('_')[0]} "
          f"(logs in {Path(runs_dir) / ab.SUBMITIT_DIR / grid.name})")
    if wait:
        for job in jobs:
            try:
                out = job.result()
                print(f"  {out['cell']}: {out['status']}"
                      + (f" ({out['reason']})" if out.get("reason") else ""))
            except Exception as err:  # a failed job: its cell shows as failed / partial
                print(f"  job {job.job_id} failed: {str(err).splitlines()[0][:200]}")
    else:
        print(f"follow them with: srv ablate {name} --preset {grid.preset} --dry-run")


def register(app: typer.Typer) -> None:
    app.command("ablate")(ablate)

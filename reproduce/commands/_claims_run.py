"""``srv claims --run``: every grid the claims need, planned, estimated, trained resumably (the
grid runner of ``srv ablate``), before the report (a module the CLI does not register)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from reproduce.errors import ExitCode, SrvError


def _check_writable(runs_dir: Path) -> None:
    """A runs folder this process can create or write into (checked, not created)."""
    folder = runs_dir.resolve()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        what = "is not a folder" if probe.exists() and not probe.is_dir() else "is not writable"
        raise SrvError(f"runs folder {runs_dir}: {probe} {what}; give --runs-dir (or $SRV_RUNS) "
                       f"a folder you can write to")


def full_run(ids: list[str] | None, runs_dir: Path, claims_file: Path | None, scale: str,
             dry_run: bool, jobs: int, img_per_s: str | None, gpus: int = 8) -> bool:
    """Plan (and unless ``dry_run`` train) the claims' grids at ``scale``; True when the report
    should follow (the cells were trained)."""
    from reproduce import experiments as ab
    from reproduce.commands._grid_output import print_plan, print_summary, refuse_unrunnable
    from reproduce.commands._options import benchmark_folders
    from reproduce.experiments import campaign
    from reproduce.experiments import claims_plan as cr
    from reproduce.report import claims as cl
    from reproduce.utils.console import plural

    if scale not in cr.SCALES:
        raise SrvError(f"no scale {scale!r}: choose {' or '.join(cr.SCALES)}")
    if scale == "regime" and claims_file is None:
        claims_file = next((p for p in cl.claims_paths()
                            if cl.load_claims(p).scale.name == "regime"), None)
        if claims_file is None:
            raise SrvError("no claims file with [scale] name = \"regime\" in recipes/claims/")
    cs = cl.load_claims(claims_file)
    claims = cr.select_claims(cs, ids)
    if scale == "imagenet":
        if not dry_run:
            raise SrvError("--scale imagenet is a plan for a GPU cluster: add --dry-run (train "
                           "each grid there with srv ablate <grid> --preset full --seeds ...)")
        print("\n".join(cr.imagenet_lines(claims, img_per_s, benchmark_folders(), gpus=gpus,
                                          seeds=cs.design.seeds if cs.design else None)))
        return False
    if not dry_run:
        _check_writable(runs_dir)
    stages = campaign.plan_stages(cr.claim_grids(claims), runs_dir)
    unrunnable = campaign.check_stages(stages)
    options = ab.RunOptions(jobs=jobs, gpus=())
    if dry_run:
        for stage in stages:
            g = stage.grid
            print_plan(g, stage.states, f"grid {g.name} / {g.preset} ({g.scale}); "
                                        f"{plural(len(stage.states), 'cell')}")
            print()
    if unrunnable:
        first = next(s for s in stages if any(u[0] in s.states for u in unrunnable))
        refuse_unrunnable(unrunnable, first.grid, sum(len(s.states) for s in stages))
    lines, total = campaign.stage_lines(stages, options, campaign.StepTimes(runs_dir))
    print("the full run, grid by grid (a run two grids share trains once, for the first):")
    print("\n".join(f"  {line}" for line in lines))
    print(f"estimated total: {campaign.format_seconds(total)} at --jobs {jobs} (a cell's time: "
          f"its updates x the seconds per update of the finished runs in {runs_dir} with the "
          f"same model and config, else the assumed rate, {campaign.STATED_S_PER_STEP} s per "
          f"update of a vit-mini cell two at a time on the 2-core AMD EPYC)")
    if dry_run:
        return False
    options.gpus = ab.local_gpus([s for st in stages for s in st.states], jobs)
    try:
        summaries = campaign.run_stages(stages, runs_dir, options, progress=ab.GridProgress)
    except KeyboardInterrupt:
        print("\ninterrupted: finished cells are kept; run the same command again to resume "
              "(srv claims --run --dry-run shows where each cell stands)")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    for stage, summary in zip(stages, summaries, strict=False):
        print_summary(summary, stage.grid.name)
    if any(not s.ok for s in summaries):
        print("some cells failed: the report below uses the finished ones")
    print()
    return True

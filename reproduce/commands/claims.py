"""``srv claims``: does each claim of the paper reproduce? Verdicts from the finished runs."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from reproduce.commands._options import RunsDirOpt
from reproduce.commands._records import RecordsOpt
from reproduce.errors import SrvError, handle_errors
from reproduce.utils.console import is_terminal

RUN = "The full run (srv claims --run)"


class Format(StrEnum):
    auto = "auto"
    table = "table"
    markdown = "markdown"
    json = "json"


@handle_errors
def claims(
    ids: Annotated[list[str] | None, typer.Argument(
        help="Claim ids (accuracy, bn, relu, convs-alone, stable-seeds, stable-lr, "
             "stable-warmup, stable-optimizer, stable-edf, diversity, cost, longer); default: "
             "all.",
        show_default=False)] = None,
    grid: Annotated[list[str] | None, typer.Option(
        "--grid", help="Only the claims whose evidence is this grid (repeatable).")] = None,
    preset: Annotated[list[str] | None, typer.Option(
        "--preset", help="Only evidence from this preset (repeatable); default: for each claim "
                         "the preset with the most seeds per arm.")] = None,
    runs_dir: RunsDirOpt = Path("runs"),
    records: RecordsOpt = None,
    tables_dir: Annotated[Path | None, typer.Option(
        help="Where claims.md is written; default: $SRV_TABLES_DIR, else <runs-dir>/tables "
             "(the shipped tables/claims.md only with --tables-dir tables).")] = None,
    write: Annotated[bool, typer.Option(
        "--write/--no-write", help="Write tables/claims.md (only when every claim is "
                                   "evaluated).")] = True,
    diversity: Annotated[bool, typer.Option(
        "--diversity/--no-diversity", help="Measure token diversity from the checkpoints "
                                           "(a few seconds per run).")] = True,
    output: Annotated[Format, typer.Option(
        "--format", case_sensitive=False, help="auto (a table on a terminal, else Markdown), "
                                               "table, markdown or json.")
    ] = Format.auto,
    explain: Annotated[bool, typer.Option(
        "--explain", help="After the table: the decision rule each verdict was reached by "
                          "(the Markdown report always has it).")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Use evidence that mixes code versions, and replace a claims.md that "
                        "rests on more evidence.")] = False,
    claims_file: Annotated[Path | None, typer.Option(
        "--claims", help="One claims file (default: every scale's in recipes/claims/, the "
                         "quick scale's wang2022.toml first; $SRV_CLAIMS: one file).")] = None,
    run: Annotated[bool, typer.Option(
        "--run", rich_help_panel=RUN, help="The full run: train every grid the claims need "
        "(each claim's preset), resumably, then print the report.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", rich_help_panel=RUN, help="With --run: list each grid's cells (done / "
        "pending) and the estimated time; train nothing.")] = False,
    scale: Annotated[str, typer.Option(
        rich_help_panel=RUN, help="With --run: quick (each claim's CPU preset), regime (issue "
        "28's Fashion-MNIST scale: recipes/claims/wang2022-regime.toml) or imagenet (the "
        "paper's scale; only with --dry-run: the runs and GPU-hours per claim).")
    ] = "quick",
    jobs: Annotated[int, typer.Option(
        min=1, rich_help_panel=RUN, help="With --run: cells trained at once (as srv ablate "
                                          "--jobs).")] = 1,
    img_per_s: Annotated[str | None, typer.Option(
        rich_help_panel=RUN, help="With --scale imagenet: training img/s per GPU, one figure "
        "for every model or per model (vit-s-conv=2668,vit-s-patch=4037); default: srv bench "
        "figures, else the stem's measured reference scaled by GFLOPs.")] = None,
    gpus: Annotated[int, typer.Option(
        min=1, rich_help_panel=RUN, help="With --scale imagenet: GPUs of the cluster, for the "
        "wall-clock days of each claim.")] = 8,
) -> None:
    """Check each claim of the paper against the finished runs, with a verdict, at each scale.

    For each claim: the evidence (grid, cells, n), the statistic (Welch's test, an F test or
    Wilcoxon's, Holm-corrected over the scale's claims) and a verdict: supported, contradicted,
    inconclusive (with the seeds needed to decide), not testable (at this scale, with why), no
    evidence (its runs have not finished) or not tested (cost: numbers, no test). On a terminal a
    table with one plain sentence per claim; --explain adds the decision rule. Writes
    <runs-dir>/tables/claims.md (the full report); docs/claims.md says how each claim is made
    testable."""
    import json

    from reproduce.commands._records import output_dir, record_index, write_claims
    from reproduce.report import claims as cl
    from reproduce.report.claims import scales

    if run or dry_run or scale != "quick":
        if not run:
            raise SrvError("--dry-run and --scale go with --run: srv claims --run --dry-run")
        if records is not None:
            raise SrvError("--records reads finished runs; --run trains them: give one")
        from reproduce.commands._claims_run import full_run

        if not full_run(ids or None, runs_dir, claims_file, scale, dry_run, jobs, img_per_s,
                        gpus):
            return
        ids = None  # the report below is the full one
    sets = scales.load_scales([claims_file] if claims_file else cl.claims_paths())
    index = record_index(runs_dir, records, scales.diversity_grids(sets) if diversity else None)
    reports = scales.evaluate_scales(index, sets, ids=ids or None, grids=grid or None,
                                     presets=preset or None, force=force, diversity=diversity)
    text = scales.render_scales(reports)
    if output is Format.auto:
        output = Format.table if is_terminal() else Format.markdown
    if output is Format.json:
        print(json.dumps([{**r.to_dict(), "scale_name": rep.scale.name or None}
                          for rep in reports for r in rep.shown], indent=2))
    elif output is Format.table:
        _print_tables(reports, explain)
    else:
        print(text, end="")
    if write and not ids and not grid and not preset:
        target = output_dir(runs_dir, tables_dir) / "claims.md"
        if not any(r.result.status in ("done", "diverged") for r in index.records):
            # a report from no runs at all would replace the verdicts of an earlier one
            print(f"\nnot written: no finished runs; {target} left as it was")
            return
        path = write_claims(text, *scales.evidence(reports), target, force)
        print(f"\nwrote {path}" + ("" if output is not Format.table or explain else
                                   " (every number; the decision rule: srv claims --explain)"))


def _print_tables(reports: list, explain: bool) -> None:  # noqa: ANN001 (report.Report)
    """Each scale's claims as a rich table of plain sentences; the rule with --explain."""
    from rich.console import Console

    from reproduce.report.claims.plain import rich_table
    from reproduce.report.claims.report import decision_rule

    out = Console()
    for rep in reports:
        label = rep.scale.label or rep.scale.name or rep.path.stem
        regime = " [bold](the paper's regime)[/]" if rep.scale.regime else ""
        out.print(rich_table(rep, f"{label}{regime}"))
        if explain:
            out.print(decision_rule(rep), soft_wrap=False)
            out.print()


def register(app: typer.Typer) -> None:
    app.command("claims")(claims)

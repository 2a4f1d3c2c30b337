"""Where ``srv table`` and ``srv claims`` get their run records: a shipped records folder
(``--records results``) or a runs folder exported on the fly (a module the CLI does not
register: its name starts with _)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from reproduce.errors import SrvError

#: a records file or folder (``srv export`` writes them; ``results/`` ships with srv)
RecordsOpt = Annotated[Path | None, typer.Option(
    "--records", help="Read run records (results/*.jsonl, written by srv export) instead of "
                      "a runs folder: no run folder and no training needed.")]

#: the hidden line of a claims report that says how much evidence it rests on
_EVIDENCE = re.compile(r"<!-- srv evidence: (\d+) tested claims, (\d+) runs -->")


def record_index(runs_dir: Path, records: Path | None, diversity_grids: set[str] | None = None,
                 grids: list[str] | None = None) -> Any:
    """The run records to report on, as a :class:`~reproduce.report.records.RecordIndex`:
    from ``records`` when given, else exported from ``runs_dir`` (the effective ranks of the
    runs of ``diversity_grids`` measured on their checkpoints)."""
    from reproduce.records import load_records
    from reproduce.report.records import RecordIndex
    from reproduce.report.reference import shown_path

    if records is not None:
        return RecordIndex(load_records(records),
                           source=f"the run records in {shown_path(records)}")
    if not runs_dir.is_dir():
        raise SrvError(f"no runs directory at {runs_dir}: give --runs-dir (or $SRV_RUNS) the "
                       "folder that srv ablate / srv train wrote its runs to, or --records "
                       "results for the shipped records")
    from reproduce.experiments.export import collect

    found = collect(runs_dir, grids)
    if diversity_grids:
        from reproduce.analysis.diversity import with_eranks

        found = with_eranks(found, runs_dir, diversity_grids)
    return RecordIndex(found, source=f"the finished runs in {shown_path(runs_dir)}")


def evidence_line(tested: int, runs: int) -> str:
    """The hidden last line of a claims report (:func:`write_claims` compares it)."""
    return f"<!-- srv evidence: {tested} tested claims, {runs} runs -->\n"


def write_claims(text: str, tested: int, runs: int, target: Path, force: bool) -> Path:
    """Write a claims report unless ``target`` holds one that rests on more evidence (more
    tested claims, or as many from more runs): then refuse with one line naming --force."""
    from reproduce.report.render import write_table

    if target.exists() and not force:
        old = _EVIDENCE.search(target.read_text())
        if old is not None:
            old_tested, old_runs = int(old.group(1)), int(old.group(2))
            if (tested, runs) < (old_tested, old_runs):
                raise SrvError(
                    f"{target} holds verdicts from more evidence ({old_tested} tested claims, "
                    f"{old_runs} runs) than this report ({tested}, {runs}): left as it was; "
                    f"write elsewhere with --tables-dir DIR, or replace it with --force")
    return write_table(text + evidence_line(tested, runs), target)

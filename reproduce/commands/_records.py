"""Where ``srv table`` and ``srv claims`` get their run records: a shipped records folder
(``--records results``) or a runs folder exported on the fly (a module the CLI does not
register: its name starts with _)."""

from __future__ import annotations

import os
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


def output_dir(runs_dir: Path | str, given: Path | str | None = None) -> Path:
    """Where a command writes its tables and plots: ``given`` (``--tables-dir``), else
    ``$SRV_TABLES_DIR``, else ``<runs>/tables``: a user's runs never write into a clone's
    shipped ``tables/`` unless told to (``--tables-dir tables``)."""
    if given is not None:
        return Path(given)
    from reproduce.report.reference import ENV_TABLES_DIR

    env = os.environ.get(ENV_TABLES_DIR)
    return Path(env).expanduser() if env else Path(runs_dir) / "tables"


def shown_path(path: Path | str) -> str:
    """A path as a generated file may name it: relative to the current folder when it is
    under it, else its last two components (never a machine's absolute path)."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(Path(*path.parts[-2:])) if path.is_absolute() else str(path)


def record_index(runs_dir: Path, records: Path | None, diversity_grids: set[str] | None = None,
                 grids: list[str] | None = None) -> Any:
    """The run records to report on, as a :class:`~reproduce.report.records.RecordIndex`:
    from ``records`` when given, else exported from ``runs_dir`` (the effective ranks of the
    runs of ``diversity_grids`` measured on their checkpoints)."""
    from reproduce.records import load_records
    from reproduce.report.records import RecordIndex
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
    from reproduce.utils.atomic import atomic_write_text

    if target.exists() and not force:
        old = _EVIDENCE.search(target.read_text())
        if old is not None:
            old_tested, old_runs = int(old.group(1)), int(old.group(2))
            if (tested, runs) < (old_tested, old_runs):
                raise SrvError(
                    f"{target} holds verdicts from more evidence ({old_tested} tested claims, "
                    f"{old_runs} runs) than this report ({tested}, {runs}): left as it was; "
                    f"write elsewhere with --tables-dir DIR, or replace it with --force")
    return atomic_write_text(target, text + evidence_line(tested, runs))

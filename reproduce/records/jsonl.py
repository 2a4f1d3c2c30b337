"""Records files: JSON Lines, one :class:`~reproduce.records.schema.RunRecord` a line.

``results/<grid>-<preset>.jsonl`` holds one grid at one preset; a folder of such files is read
as one set (not its subfolders: ``results/calibration/`` is a set of its own, so calibration
seeds never join confirmatory ones). Lines are written sorted by (grid, preset, cell, seed), so a
re-export of the same runs gives the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from reproduce.errors import SrvError
from reproduce.records.schema import RecordError, RunRecord, from_dict
from reproduce.utils.atomic import atomic_write_text

__all__ = ["read_records", "load_records", "write_records", "records_file_name"]


def records_file_name(grid: str, preset: str) -> str:
    """``stem-quick.jsonl``; ``runs.jsonl`` for runs no grid made."""
    return f"{grid}-{preset}.jsonl" if grid else "runs.jsonl"


def read_records(path: Path | str) -> list[RunRecord]:
    """Every record of one file; a bad line (not JSON, e.g. truncated; another schema version;
    a missing field) is one :class:`SrvError` naming the file and the line."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise SrvError(f"cannot read records file {path}: {err.strerror or err}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(from_dict(json.loads(line)))
        except json.JSONDecodeError as err:
            raise SrvError(f"{path}:{number}: not a JSON record ({err.msg}; a truncated "
                           "line?): export it again with srv export") from None
        except (RecordError, TypeError) as err:
            raise SrvError(f"{path}:{number}: {err}") from None
    return records


def load_records(path: Path | str) -> list[RunRecord]:
    """The records of a file, or of every ``*.jsonl`` directly in a folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise SrvError(f"no records (*.jsonl) in {path}: give --records the folder that "
                           "srv export wrote (e.g. results)")
        return [r for f in files for r in read_records(f)]
    if not path.exists():
        raise SrvError(f"no records at {path}: give --records a folder of *.jsonl files or "
                       "one file (srv export writes them)")
    return read_records(path)


def _order(record: RunRecord) -> tuple[object, ...]:
    return (record.grid, record.preset, sorted(record.cell.items()), record.seed, record.run)


def write_records(folder: Path | str, records: Iterable[RunRecord]) -> list[Path]:
    """Write one file per (grid, preset) under ``folder`` (replacing it whole, atomically);
    returns the paths written."""
    groups: dict[str, list[RunRecord]] = {}
    for record in records:
        groups.setdefault(records_file_name(record.grid, record.preset), []).append(record)
    paths = []
    for name, group in sorted(groups.items()):
        text = "".join(json.dumps(r.to_dict(), sort_keys=False) + "\n"
                       for r in sorted(group, key=_order))
        paths.append(atomic_write_text(Path(folder) / name, text))
    return paths

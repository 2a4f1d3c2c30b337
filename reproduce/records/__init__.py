"""Run records: typed, versioned data a run leaves (:mod:`.schema`) and the JSON Lines files
that ship them (:mod:`.jsonl`). Written by the engine and by ``srv export``; read by
experiments/ and report/.

May import: :mod:`reproduce.errors` and :mod:`reproduce.utils` only.
"""

from reproduce.records.jsonl import load_records, read_records, records_file_name, write_records
from reproduce.records.schema import (
    SCHEMA_VERSION,
    Environment,
    EpochRow,
    RecordError,
    RunRecord,
    RunResult,
    Settings,
    from_dict,
)

__all__ = ["SCHEMA_VERSION", "Environment", "EpochRow", "RecordError", "RunRecord", "RunResult",
           "Settings", "from_dict", "load_records", "read_records", "records_file_name",
           "write_records"]

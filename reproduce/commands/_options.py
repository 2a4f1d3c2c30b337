"""Options several commands share (a module the CLI does not register: its name starts with _)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

#: where run directories live (``srv train``, ``ablate``, ``table``, ``analyze``)
RunsDirOpt = Annotated[Path, typer.Option(help="Where run directories live.", envvar="SRV_RUNS")]

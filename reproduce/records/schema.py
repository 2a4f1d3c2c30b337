"""The run record: what one training run was and what it gave, as typed, versioned data.

One :class:`RunRecord` per run (per grid that uses it): what identifies it (grid, preset, the
cell's axis labels, seed, config digest), the settings that matter for reading it, its result,
its per-epoch curve, the claim metrics measured on its checkpoint and the code and machine it ran
on. Reporting (tables, claims) reads these and nothing else, so a shipped ``results/*.jsonl``
rebuilds every shipped table without the run folders (DESIGN.md, "Data flows one way").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCHEMA_VERSION", "ERANK_IMAGES", "Settings", "EpochRow", "RunResult", "Environment",
           "RunRecord", "RecordError", "from_dict"]

#: bumped on any change of the fields below; a reader refuses other versions
SCHEMA_VERSION = 1
#: the fixed validation images the effective ranks are measured on (``srv analyze diversity``'s
#: default batch)
ERANK_IMAGES = 256


class RecordError(ValueError):
    """A record that cannot be read: the message names the field (the reader adds file:line)."""


@dataclass(frozen=True)
class Settings:
    """The resolved settings a reader needs to tell runs apart and to state the scale."""

    model: str
    recipe: str
    stem: str
    dataset: str
    img_size: int
    num_classes: int | None
    stem_width: int | None
    epochs: int
    opt: str
    lr: float
    weight_decay: float
    warmup_epochs: float
    config_hash: str  # the digest of the resolved config: the run folder's suffix


@dataclass(frozen=True)
class EpochRow:
    """One finished epoch: validation top-1 (%) and mean training loss."""

    epoch: int
    val_top1: float | None
    train_loss: float | None


@dataclass(frozen=True)
class RunResult:
    """Where the run stands and what it gave. ``status`` is the cell's: done, diverged,
    failed, partial, running or pending. ``erank`` / ``erank_untrained``: the mean effective
    rank of the patch tokens after the last block, of the trained model and of the same model
    untrained (the diversity claim, Wang et al. §4), when measured."""

    status: str
    epoch: int | None = None
    reason: str | None = None
    top1: float | None = None
    best_top1: float | None = None
    n_val: int | None = None
    params_m: float | None = None
    skipped_steps: int | None = None
    train_time_s: float | None = None
    finished: str | None = None
    erank: float | None = None
    erank_untrained: float | None = None


@dataclass(frozen=True)
class Environment:
    """The code and machine: git commit (from the package's build metadata outside a checkout),
    whether the tree had local changes, srv's version, the device and the world size."""

    git_commit: str | None
    git_dirty: bool | None
    code_version: str
    device: str | None = None
    world_size: int | None = None


@dataclass(frozen=True)
class RunRecord:
    """One run as one grid cell. ``cell`` maps each of the grid's axes to its label; a run that
    no grid made (a plain ``srv train``) has ``grid`` and ``preset`` empty."""

    grid: str
    preset: str
    cell: dict[str, str]
    seed: int
    run: str  # the run folder's name, <model>-<config hash>
    settings: Settings
    result: RunResult
    env: Environment
    curve: list[EpochRow] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of one line of a records file (``schema_version`` first)."""
        out = dataclasses.asdict(self)
        return {"schema_version": out.pop("schema_version"), **out}

    def with_result(self, **changes: Any) -> RunRecord:
        """A copy with some result fields replaced (e.g. the measured effective ranks)."""
        return dataclasses.replace(self, result=dataclasses.replace(self.result, **changes))


_NESTED = {"settings": Settings, "result": RunResult, "env": Environment}


def _build(cls: type, data: Any, where: str) -> Any:
    """``cls`` from a dict: every field without a default must be present; unknown keys are
    refused (a newer writer would have bumped the schema version)."""
    if not isinstance(data, dict):
        raise RecordError(f"{where or 'the record'} is not an object")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RecordError(f"unknown field {where}{unknown[0]!r}")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(f"missing field {where}{name!r}")
            continue
        value = data[name]
        if name in _NESTED and cls is RunRecord:
            value = _build(_NESTED[name], value, f"{name}.")
        elif name == "curve" and cls is RunRecord:
            if not isinstance(value, list):
                raise RecordError("field 'curve' is not a list")
            value = [_build(EpochRow, row, "curve[].") for row in value]
        kwargs[name] = value
    return cls(**kwargs)


def from_dict(data: Any) -> RunRecord:
    """A record from one parsed line; :class:`RecordError` names what is wrong."""
    if not isinstance(data, dict):
        raise RecordError("the line is not a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise RecordError(f"schema_version {version!r} is not {SCHEMA_VERSION}, the version "
                          "this srv reads: export the runs again with this srv (srv export)")
    record = _build(RunRecord, data, "")
    if not isinstance(record.cell, dict) or not isinstance(record.seed, int):
        raise RecordError("field 'cell' must be an object and 'seed' an integer")
    return record

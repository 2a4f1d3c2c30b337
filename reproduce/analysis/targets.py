"""What ``srv analyze`` measures: a run directory, a ``.pt`` checkpoint, an untrained catalogue
model, or every cell of a grid whose run has a checkpoint (:class:`TargetSpec`), with the config
that rebuilds its model and data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reproduce.errors import SrvError
from reproduce.recipes.grids import Grid
from reproduce.report.records import cell_label

__all__ = ["TargetSpec", "resolve_target", "unique_labels", "grid_targets"]


@dataclass
class TargetSpec:
    """Something to analyse: a run directory, a checkpoint or an untrained catalogue model."""

    label: str
    kind: str  # run | checkpoint | model
    source: str  # the path, or the model name
    config: dict[str, Any]  # the run config (RunConfig.to_dict())
    group: str = ""  # plot colour (a grid cell without its seed); default: the label
    seed: int = 0
    status: str = ""  # done / diverged / partial ... for runs
    top1: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def recipe(self, data_path: str | None = None) -> Any:
        from reproduce.training.config import RunConfig

        r = RunConfig.from_dict(self.config).recipe
        return dataclasses.replace(r, data_path=data_path) if data_path else r

    def load(self, weights: str = "last", device: str | torch.device = "cpu",
             num_classes: int | None = None) -> nn.Module:
        """The model, in eval mode (an untrained model is built with ``torch.manual_seed``)."""
        from reproduce.training.builders import build_model
        from reproduce.training.resume import load_checkpoint_model

        if self.kind == "model":
            torch.manual_seed(self.seed)
            model = build_model(self.config, num_classes or 1000)
            return model.to(device).eval()
        model, _, which = load_checkpoint_model(self.source, weights, device)
        self.info.update(weights=which["weights"], checkpoint=which["checkpoint"],
                         epoch=which["epoch"])
        return model

    def describe(self) -> dict[str, Any]:
        out = {"label": self.label, "kind": self.kind, "source": self.source,
               "model": self.config.get("model"), "stem": self.config.get("stem") or None,
               "seed": self.config.get("seed", self.seed)}
        if self.kind != "model":
            out.update(status=self.status or None, top1=self.top1)
        return {**out, **self.info}


def _run_status(run_dir: Path) -> tuple[str, float | None]:
    from reproduce.experiments.cells import inspect_run

    status, info = inspect_run(run_dir)
    result = info.get("result") or {}
    return status, result.get("top1")


def resolve_target(text: str, recipe: str | None = None,
                   overrides: dict[str, Any] | None = None, seed: int = 0) -> TargetSpec:
    """A run directory, a ``.pt`` checkpoint, or a catalogue model name (untrained: built with
    ``seed`` and the recipe ``recipe``, default the model's own as for ``srv train``)."""
    path = Path(text)
    if path.is_dir():
        if not (path / "last.pt").exists() and not (path / "best.pt").exists():
            raise SrvError(f"{path} is a directory without a checkpoint (last.pt / best.pt): "
                           f"give a run directory that has trained at least one epoch")
        cfg = _checkpoint_config(path / ("last.pt" if (path / "last.pt").exists()
                                         else "best.pt"))
        status, top1 = _run_status(path)
        return TargetSpec(label=_config_label(cfg), kind="run", source=str(path), config=cfg,
                          seed=int(cfg.get("seed", 0)), status=status, top1=top1)
    if path.is_file():
        cfg = _checkpoint_config(path)
        return TargetSpec(label=f"{_config_label(cfg)} ({path.name})", kind="checkpoint",
                          source=str(path), config=cfg, seed=int(cfg.get("seed", 0)))
    from reproduce.models import UnknownModelError, get_entry
    from reproduce.training.config import resolve_config

    try:
        entry = get_entry(text)
    except UnknownModelError as err:
        raise SrvError(f"{text!r} is not a run directory, a checkpoint file or a catalogue "
                       f"model: {err}") from None
    cfg = resolve_config(entry.name, recipe,
                         {**(overrides or {}), "seed": seed})
    return TargetSpec(label=f"{entry.name} (untrained)", kind="model", source=entry.name,
                      config=cfg.to_dict(), seed=seed)


def _checkpoint_config(path: Path) -> dict[str, Any]:
    from reproduce.training.resume import read_checkpoint

    return dict(read_checkpoint(path, mmap=True)["config"])


def _config_label(cfg: dict[str, Any]) -> str:
    label = str(cfg.get("name") or cfg.get("model"))
    if cfg.get("stem"):
        label += f" stem={cfg['stem']}"
    return label


def unique_labels(targets: Sequence[TargetSpec]) -> None:
    """Make labels unique (in place) by appending the config hash, then a counter."""
    seen: dict[str, int] = {}
    for t in targets:
        seen[t.label] = seen.get(t.label, 0) + 1
    for t in targets:
        if seen[t.label] > 1 and t.config.get("hash"):
            t.label = f"{t.label} [{t.config['hash'][:6]}]"
    count: dict[str, int] = {}
    for t in targets:
        count[t.label] = count.get(t.label, 0) + 1
        if count[t.label] > 1:
            t.label = f"{t.label} #{count[t.label]}"
    for t in targets:
        t.group = t.group or t.label


def grid_targets(grid: Grid, runs_root: Path | str, weights: str = "last",
                 states: list[Any] | None = None) -> tuple[list[TargetSpec], list[str]]:
    """Every cell of ``grid`` whose run has the ``weights`` checkpoint, and a note per cell that
    has none (pending ...)."""
    from reproduce.experiments.cells import plan

    runs_root = Path(runs_root)
    if states is None:
        states = plan(grid, runs_root)
    multi_seed = len({s.cell.seed for s in states}) > 1
    targets: list[TargetSpec] = []
    skipped: list[str] = []
    for st in states:
        ckpt = st.run_dir / ("best.pt" if weights == "best" else "last.pt")
        group = cell_label(grid, st.cell.labels)
        if not ckpt.exists():
            skipped.append(f"{group} (seed {st.cell.seed}): {st.status}, no {ckpt.name}")
            continue
        result = st.info.get("result") or {}
        targets.append(TargetSpec(
            label=f"{group} (seed {st.cell.seed})" if multi_seed else group, kind="run",
            source=str(st.run_dir), config=st.cfg.to_dict(), group=group, seed=st.cell.seed,
            status=st.status, top1=result.get("top1"),
            info={"cell": st.cell.describe()}))
    return targets, skipped

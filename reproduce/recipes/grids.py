"""Ablation grids: one TOML file per paper experiment in ``recipes/grids/``, expanded into cells
(``(model, overrides, seed)``, each run in the engine's ``<runs_root>/<model>-<config hash>/``).
Imports recipes and errors only; the file format (axes, presets, tables) is in docs/experiments.md.
"""

from __future__ import annotations

import copy
import functools
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError
from reproduce.recipes.axes import Axis, build_axis, fill

__all__ = [
    "Axis",
    "Cell",
    "Grid",
    "grid_dir",
    "list_grids",
    "load_grid",
    "parse_list",
    "parse_axis_option",
]

TABLE_KINDS = ("grid", "edf")
METRICS = ("top1", "best_top1")
_TOP_KEYS = {"name", "title", "description", "default_preset", "table", "axes", "presets"}
_PRESET_KEYS = {"recipe", "scale", "seeds", "model", "vars", "set", "axes", "add_axes",
                "calibration", "description"}
_TABLE_KEYS = {"rows", "columns", "kind", "caption", "reference", "metric", "label"}


def grid_dir() -> Path:
    """Where named grids live: ``$SRV_GRIDS``, else ``grids/`` in the recipe directory."""
    env = os.environ.get("SRV_GRIDS")
    if env:
        return Path(env)
    from reproduce.recipes.recipe import recipe_dir

    return recipe_dir() / "grids"


def list_grids() -> list[str]:
    return sorted(p.stem for p in grid_dir().glob("*.toml"))


# --- cells -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One run of a grid: the model, the overrides on top of the recipe, and the seed.

    ``labels`` gives the cell's position on every swept axis (axis name -> value label), in the
    grid's axis order; the seed is kept apart because tables aggregate over it.
    """

    model: str
    recipe: str
    overrides: tuple[tuple[str, Any], ...]
    seed: int
    labels: tuple[tuple[str, str], ...]

    @property
    def override_dict(self) -> dict[str, Any]:
        return dict(self.overrides)

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def describe(self) -> str:
        """``stem=conv lr=0.001 seed=0``: a short human name."""
        parts = [f"{axis}={label}" for axis, label in self.labels]
        return " ".join([*parts, f"seed={self.seed}"])

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (submitit pickles it; tests compare it)."""
        return {"model": self.model, "recipe": self.recipe, "overrides": self.override_dict,
                "seed": self.seed, "labels": self.label_dict}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        return cls(model=data["model"], recipe=data["recipe"],
                   overrides=tuple(data["overrides"].items()), seed=int(data["seed"]),
                   labels=tuple(data["labels"].items()))

    def set_args(self) -> list[str]:
        """The ``srv train`` options that rebuild this cell's config (``--set k=v`` each).

        Values are written so that the recipe parser reads back exactly the same value (floats
        by ``repr``), so the child run lands in the same hashed run directory.
        """
        args: list[str] = []
        for key, value in [*self.overrides, ("seed", self.seed)]:
            args += ["--set", f"{key}={_cli_text(value)}"]
        return args


def _cli_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


# --- grids -----------------------------------------------------------------------------------


@dataclass
class Grid:
    """A grid at one preset (scale): its axes, recipe, seeds and fixed overrides."""

    name: str
    path: Path
    preset: str
    presets: list[str]
    title: str
    description: str
    recipe: str
    scale: str
    seeds: list[int]
    axes: list[Axis]
    fixed: dict[str, Any]
    model: str | None
    table: dict[str, Any]
    default_preset: str = ""
    #: a calibration preset (``calibration = true``): its runs choose a scale (issue 28's
    #: pre-registration), so they are never a claim's evidence
    calibration: bool = False

    @property
    def table_kind(self) -> str:
        return self.table["kind"]

    @property
    def row_axes(self) -> list[str]:
        return self.table["rows"]

    @property
    def column_axes(self) -> list[str]:
        return self.table["columns"]

    def axis(self, name: str) -> Axis:
        for axis in self.axes:
            if axis.name == name:
                return axis
        raise SrvError(f"grid {self.name!r} has no axis {name!r}; its axes: "
                       f"{', '.join(a.name for a in self.axes)}")

    def cells(self) -> list[Cell]:
        """Every cell, axis by axis in file order, seeds innermost."""
        combos: list[list[tuple[Axis, str, dict[str, Any]]]] = [[]]
        for axis in self.axes:
            combos = [c + [(axis, label, ov)] for c in combos for label, ov in axis.points]
        cells = []
        for combo in combos:
            overrides = dict(self.fixed)
            labels = []
            for axis, label, ov in combo:
                overrides.update(ov)
                labels.append((axis.name, label))
            overrides = {k: self._per_axis(k, v, dict(labels)) for k, v in overrides.items()}
            model = overrides.pop("model", None) or self.model
            if not model:
                raise SrvError(f"grid {self.name!r} ({self.preset}): no axis sets 'model' and "
                               f"the preset has no model = '...'")
            for seed in self.seeds:
                cells.append(Cell(model=str(model), recipe=self.recipe,
                                  overrides=tuple(sorted(overrides.items())), seed=seed,
                                  labels=tuple(labels)))
        return cells


    def _per_axis(self, key: str, value: Any, labels: dict[str, str]) -> Any:
        """An override that depends on another axis's label, ``{ by = "stem", patch = 0.05,
        conv = 0.1 }``: the value for the cell's label on that axis (e.g. SGD's lr tuned per
        stem, issue 28 (3)); any other value as it is."""
        if not (isinstance(value, dict) and "by" in value):
            return value
        where = f"grid {self.name!r} ({self.preset}): {key} = {{ by = {value['by']!r}, ... }}"
        by = str(value["by"])
        if by not in labels:
            raise SrvError(f"{where}: no swept axis {by!r}; its axes: {', '.join(labels)}")
        if labels[by] not in value:
            raise SrvError(f"{where}: no value for {by} = {labels[by]!r}; give one for each of "
                           f"{', '.join(self.axis(by).labels)}")
        return value[labels[by]]


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SrvError(f"grid {path} is not valid TOML: {err}") from None


def resolve_grid_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.exists():
        return path
    candidate = grid_dir() / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    known = ", ".join(list_grids()) or "none"
    raise SrvError(f"no grid {str(name_or_path)!r}: give a name ({known}) or a .toml path")


def load_grid(
    name_or_path: str | Path,
    preset: str | None = None,
    seeds: Iterable[int] | None = None,
    axes: dict[str, list[str]] | None = None,
    overrides: dict[str, Any] | None = None,
    samples: int | None = None,
) -> Grid:
    """Load a grid at a preset, with optional CLI changes.

    Args:
        name_or_path: a grid name (``stem``) or a ``.toml`` path.
        preset: the scale (default: the file's ``default_preset``, else the first preset).
        seeds: replace the preset's seeds.
        axes: axis name -> the labels (or, for a recipe-key axis, new values) to keep.
        overrides: extra fixed recipe overrides for every cell (``--set``); they may not touch
            a swept key.
        samples: the number of samples of a random axis.
    """
    path = resolve_grid_path(name_or_path)
    doc = _read(path)
    where = str(path)
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise SrvError(f"{where}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    presets = doc.get("presets") or {}
    if not presets:
        raise SrvError(f"{where}: define at least one [presets.<scale>] table")
    default_preset = doc.get("default_preset") or next(iter(presets))
    if default_preset not in presets:
        raise SrvError(f"{where}: default_preset {default_preset!r} is not a preset")
    preset = preset or default_preset
    if preset not in presets:
        raise SrvError(f"grid {path.stem!r} has no preset {preset!r}; choose from "
                       f"{', '.join(presets)}")
    p = presets[preset]
    pwhere = f"{where} [presets.{preset}]"
    unknown = set(p) - _PRESET_KEYS
    if unknown:
        raise SrvError(f"{pwhere}: unknown key(s) {', '.join(sorted(unknown))}; allowed: "
                       f"{', '.join(sorted(_PRESET_KEYS))}")
    if "recipe" not in p:
        raise SrvError(f"{pwhere}: needs recipe = '<name>'")
    variables = dict(p.get("vars") or {})

    axis_specs: dict[str, dict[str, Any]] = copy.deepcopy(doc.get("axes") or {})
    for name, change in (p.get("axes") or {}).items():
        if name not in axis_specs:
            raise SrvError(f"{pwhere}: changes axis {name!r}, which the grid does not define")
        axis_specs[name].update(change)
    for name, spec in (p.get("add_axes") or {}).items():
        if name in axis_specs:
            raise SrvError(f"{pwhere}: add_axes.{name}: the grid already has axis {name!r}; "
                           f"change it under [presets.{preset}.axes.{name}]")
        if not isinstance(spec, dict):
            raise SrvError(f"{pwhere}: add_axes.{name} must be a table (key = ..., values = "
                           f"[...]), as an axis of the grid")
        axis_specs[name] = copy.deepcopy(spec)
    calibration = p.get("calibration", False)
    if not isinstance(calibration, bool):
        raise SrvError(f"{pwhere}: calibration must be true or false")
    if samples is not None:
        randoms = [n for n, s in axis_specs.items() if s.get("kind") == "random"]
        if not randoms:
            raise SrvError(f"grid {path.stem!r} has no random axis: --samples does not apply")
        for n in randoms:
            axis_specs[n]["samples"] = samples
    built = [build_axis(n, s, variables, f"{where} [axes.{n}]") for n, s in axis_specs.items()]

    for name, wanted in (axes or {}).items():
        matches = [a for a in built if a.name == name]
        if not matches:
            raise SrvError(f"--axis {name}=...: grid {path.stem!r} has no axis {name!r}; its "
                           f"axes: {', '.join(a.name for a in built) or 'none'}")
        matches[0].restrict(wanted, f"--axis {name}")

    seeds_list = list(seeds) if seeds is not None else list(p.get("seeds", [0]))
    if not seeds_list or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                 for s in seeds_list):
        where = "--seeds" if seeds is not None else f"{pwhere}: seeds"
        raise SrvError(f"{where} must be a non-empty list of integers >= 0 (e.g. 0-2 or 0,1)")
    if len(set(seeds_list)) != len(seeds_list):
        raise SrvError("seeds must not repeat")

    fixed = {k: fill(None, v, variables, pwhere) for k, v in (p.get("set") or {}).items()}
    swept = {k for a in built for _, ov in a.points for k in ov}
    for key, value in (overrides or {}).items():
        if key in swept:
            axis_name = next(a.name for a in built if any(key in ov for _, ov in a.points))
            raise SrvError(f"--set {key}=...: {key!r} is swept by axis {axis_name!r}; use "
                           f"--axis {axis_name}=v1,v2 instead")
        fixed[key] = value
    if "seed" in fixed or "seed" in swept:
        raise SrvError(f"{pwhere}: seeds are an axis of their own; use seeds = [...] or --seeds")

    table = _table_spec(doc.get("table") or {}, built, where)
    model = p.get("model")
    return Grid(
        name=doc.get("name", path.stem),
        path=path,
        preset=preset,
        presets=list(presets),
        title=doc.get("title", path.stem),
        description=" ".join(str(doc.get("description", "")).split()),
        recipe=str(p["recipe"]),
        scale=str(p.get("scale", preset)),
        seeds=seeds_list,
        axes=built,
        fixed=fixed,
        model=fill(None, model, variables, pwhere) if model else None,
        table=table,
        default_preset=default_preset,
        calibration=calibration,
    )


def _table_spec(spec: dict[str, Any], axes: list[Axis], where: str) -> dict[str, Any]:
    unknown = set(spec) - _TABLE_KEYS
    if unknown:
        raise SrvError(f"{where} [table]: unknown key(s) {', '.join(sorted(unknown))}")
    names = [a.name for a in axes]
    kind = spec.get("kind", "grid")
    if kind not in TABLE_KINDS:
        raise SrvError(f"{where} [table]: kind {kind!r} is not one of {', '.join(TABLE_KINDS)}")
    rows = list(spec.get("rows", names[:1]))
    columns = list(spec.get("columns", []))
    for axis in rows + columns:
        if axis not in names:
            raise SrvError(f"{where} [table]: {axis!r} is not an axis ({', '.join(names)})")
    metric = spec.get("metric", "top1")
    if metric not in METRICS:
        raise SrvError(f"{where} [table]: metric {metric!r} is not one of {', '.join(METRICS)}")
    reference = spec.get("reference", [])
    if isinstance(reference, str):
        reference = [reference]
    return {"rows": rows, "columns": columns, "kind": kind, "metric": metric,
            "caption": spec.get("caption", ""), "reference": list(reference),
            "label": spec.get("label", "")}


# --- comma lists on the command line -----------------------------------------------------------


def parse_list(text: str, what: str = "value") -> list[str]:
    """``"0,1, 2"`` -> ``["0", "1", "2"]``; empty items are an error."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or any(not item for item in items):
        raise SrvError(f"{what} list {text!r} has an empty item; write e.g. 0,1,2")
    return items


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or a range ``"0-4"`` -> list of ints."""
    seeds: list[int] = []
    for item in parse_list(text, "seed"):
        lo, dash, hi = item.partition("-")
        try:
            if dash and lo:
                seeds += list(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(item))
        except ValueError:
            raise SrvError(f"--seeds {text!r}: {item!r} is not an integer or a range a-b") \
                from None
    return seeds


def parse_axis_option(options: list[str]) -> dict[str, list[str]]:
    """``["stem=patch,conv", "lr=1e-3,2e-3"]`` -> ``{"stem": [...], "lr": [...]}``."""
    out: dict[str, list[str]] = {}
    for option in options:
        name, sep, values = option.partition("=")
        if not sep or not name.strip():
            raise SrvError(f"--axis {option!r}: write AXIS=v1,v2 (e.g. --axis stem=patch,conv)")
        out[name.strip()] = parse_list(values, f"--axis {name.strip()}")
    return out


@functools.lru_cache(maxsize=1)
def calibration_seeds() -> frozenset[int]:
    """Every seed of a calibration preset (``calibration = true``) of any grid: never a
    confirmatory preset's evidence, even where that preset shares the configuration (a
    calibration cell at the chosen setting is the preset's cell at another seed)."""
    return frozenset(s for name in list_grids() for preset in load_grid(name).presets
                     for g in [load_grid(name, preset=preset)] if g.calibration
                     for s in g.seeds)

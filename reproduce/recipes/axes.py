"""The axes of an ablation grid (:mod:`reproduce.recipes.grids`): a list of values of one
recipe key (or of the model), a table of labelled overrides, or Xiao et al.'s random (lr, wd)
samples (docs/paper.md §3), each built from its TOML table into ordered (label, overrides) points.
Pure Python, like the grids."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from reproduce.errors import SrvError

__all__ = ["Axis", "AXIS_KEYS", "build_axis", "fill"]

AXIS_KEYS = {"key", "format", "values", "labels", "kind", "samples", "seed", "log", "ranges",
             "title"}


@dataclass
class Axis:
    """A swept dimension: ordered (label, overrides) pairs."""

    name: str
    points: list[tuple[str, dict[str, Any]]]
    display: dict[str, str] = field(default_factory=dict)
    key: str | None = None
    kind: str = "list"
    title: str | None = None

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self.points]

    def show(self, label: str) -> str:
        """The display name of a value (``patch`` -> ``patchify``)."""
        return self.display.get(label, label)

    def restrict(self, wanted: list[str], where: str) -> None:
        """Keep only the given labels (in the given order); for key axes new values are allowed."""
        by_label = dict(self.points)
        points: list[tuple[str, dict[str, Any]]] = []
        for text in wanted:
            if text in by_label:
                points.append((text, by_label[text]))
            elif self.key is not None and self.kind == "list" and self.key != "model":
                from reproduce.recipes.recipe import parse_overrides

                value = parse_overrides([f"{self.key}={text}"])[self.key]
                points.append((text, {self.key: value}))
            else:
                raise SrvError(f"{where}: {text!r} is not a value of axis {self.name!r}; "
                               f"choose from {', '.join(self.labels)}")
        if not points:
            raise SrvError(f"{where}: give at least one value for axis {self.name!r}")
        self.points = points


def fill(template: str | None, value: Any, variables: dict[str, Any], where: str) -> Any:
    if template is None:
        if isinstance(value, str) and "{" in value:
            return _substitute(value, variables, where)
        return value
    return _substitute(template, {**variables, "value": value}, where)


def _substitute(text: str, variables: dict[str, Any], where: str) -> str:
    try:
        return text.format(**variables)
    except (KeyError, IndexError, ValueError) as err:
        raise SrvError(f"{where}: cannot fill {text!r} ({err!r}); define it in the preset's "
                       f"vars") from None


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _sig(x: float, digits: int = 3) -> float:
    """Round to ``digits`` significant digits (readable labels, stable config hashes)."""
    if x == 0:
        return 0.0
    return round(x, digits - 1 - int(math.floor(math.log10(abs(x)))))


def _random_points(name: str, spec: dict[str, Any], where: str
                   ) -> list[tuple[str, dict[str, Any]]]:
    samples = spec.get("samples")
    ranges = spec.get("ranges")
    if not isinstance(samples, int) or samples < 1:
        raise SrvError(f"{where}: a random axis needs samples = N (N >= 1)")
    if not isinstance(ranges, dict) or not ranges:
        raise SrvError(f"{where}: a random axis needs ranges = {{ key = [low, high], ... }}")
    log = bool(spec.get("log", True))
    rng = random.Random(int(spec.get("seed", 0)))
    bounds: list[tuple[str, float, float]] = []
    for key, pair in ranges.items():
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(v, int | float) for v in pair) or not pair[0] < pair[1]
                or (log and pair[0] <= 0)):
            raise SrvError(f"{where}: range of {key!r} must be [low, high] with 0 < low < high")
        bounds.append((key, float(pair[0]), float(pair[1])))
    width = len(str(samples - 1))
    points = []
    for i in range(samples):
        overrides = {}
        for key, lo, hi in bounds:
            u = rng.random()
            x = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))) if log \
                else lo + u * (hi - lo)
            overrides[key] = _sig(x)
        points.append((f"s{i:0{width}d}", overrides))
    return points


def build_axis(name: str, spec: dict[str, Any], variables: dict[str, Any], where: str) -> Axis:
    unknown = set(spec) - AXIS_KEYS
    if unknown:
        raise SrvError(f"{where}: unknown axis field(s) {', '.join(sorted(unknown))}; "
                       f"allowed: {', '.join(sorted(AXIS_KEYS))}")
    kind = spec.get("kind", "list")
    display = {str(k): str(v) for k, v in (spec.get("labels") or {}).items()}
    if kind == "random":
        points = _random_points(name, spec, where)
        display = {label: " ".join(f"{k}={v:g}" for k, v in ov.items()) for label, ov in points}
        return Axis(name, points, display, kind="random", title=spec.get("title"))
    if kind != "list":
        raise SrvError(f"{where}: axis kind {kind!r} is not 'list' or 'random'")
    key = spec.get("key")
    template = spec.get("format")
    values = spec.get("values")
    points: list[tuple[str, dict[str, Any]]] = []
    if isinstance(values, list):
        if key is None:
            raise SrvError(f"{where}: a list of values needs key = '<recipe key or model>'")
        for value in values:
            points.append((_label(value), {key: fill(template, value, variables, where)}))
    elif isinstance(values, dict):
        for label, value in values.items():
            if isinstance(value, dict):
                overrides = {k: fill(None, v, variables, where) for k, v in value.items()}
            elif key is None:
                raise SrvError(f"{where}: value {label!r} is not a table of overrides and the "
                               f"axis has no key")
            else:
                overrides = {key: fill(template, value, variables, where)}
            points.append((str(label), overrides))
    else:
        raise SrvError(f"{where}: axis needs values = [...] or a table of label = value")
    if not points:
        raise SrvError(f"{where}: axis has no values")
    labels = [label for label, _ in points]
    if len(set(labels)) != len(labels):
        raise SrvError(f"{where}: axis has duplicate values")
    return Axis(name, points, display, key=key, kind="list", title=spec.get("title"))

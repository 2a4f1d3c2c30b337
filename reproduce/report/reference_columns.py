"""The published numbers beside ours: a reference CSV (:mod:`reproduce.report.reference`) as a
column or rows of a grid's table, and as a table of its own.

A reference row is matched to a table cell on the model (``vit-s-conv`` with stem ``conv-nobn``
and ``vit-s-conv-nobn`` name the same one), the grid's ``[table] reference`` spec (fixed rows,
axis columns) and the recipe settings a CSV gives (optimizer, lr, warmup, epochs); a published
top-1 error counts as ``100 - top1``. The notes say where each number came from, or that the
CSV has none yet (the paper's numbers are never invented).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reproduce.errors import SrvError
from reproduce.recipes.grids import Grid
from reproduce.report.render import Entry, Table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["reference_table"]


def _canon(model: Any, stem: Any) -> tuple[str, str]:
    """``(vit-s-conv, conv-nobn)`` and ``(vit-s-conv-nobn, "")`` name the same model."""
    model = str(model)
    stem = "" if stem is None or (isinstance(stem, float) and math.isnan(stem)) else str(stem)
    if stem and not any(ch in stem for ch in ",;"):
        m = re.fullmatch(r"(vit-[a-z0-9]+)-.+", model)
        if m:
            return f"{m.group(1)}-{stem}", ""
    return model, stem


def _same(a: Any, b: Any) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return False
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(a).strip().lower() == str(b).strip().lower()


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or str(v).strip() == ""


def _ref_value(row: pd.Series, column: str | None) -> float | None:
    if column:
        v = row.get(column)
        return None if _empty(v) else float(v)
    if "top1" in row and not _empty(row["top1"]):
        return float(row["top1"])
    if "top1_err" in row and not _empty(row["top1_err"]):
        return 100.0 - float(row["top1_err"])
    return None


#: CSV column -> recipe key, for matching a reference row on a cell's own config
_SETTING_KEYS = {"optimizer": "opt", "lr": "lr", "warmup_epochs": "warmup_epochs",
                 "epochs": "epochs"}


@dataclass
class _Reference:
    file: str
    title: str
    value: str | None
    rows: dict[str, dict[str, Any]] | None
    columns: dict[str, str]
    frame: Any
    converted: bool = False
    used: bool = False

    def lookup(self, row_label: str | None, col_labels: dict[str, str],
               cell: dict[str, Any]) -> float | None:
        """The published number for a table cell, or None."""
        df = self.frame
        if not len(df):
            return None
        if self.rows is not None:
            if row_label not in self.rows:
                return None
            want = dict(self.rows[row_label])
        else:
            want = {"model": cell["model"], "stem": cell["stem"]}
        want_model = _canon(want.pop("model", ""), want.pop("stem", ""))
        for _, ref in df.iterrows():
            if _canon(ref.get("model"), ref.get("stem")) != want_model:
                continue
            if not all(_same(ref.get(k), v) for k, v in want.items()):
                continue
            if not all(_same(ref.get(col), col_labels[axis])
                       for axis, col in self.columns.items() if axis in col_labels):
                continue
            if self.rows is None and not all(
                    _empty(ref.get(col)) or _same(ref.get(col), cell.get(key))
                    for col, key in _SETTING_KEYS.items() if col in ref):
                continue
            value = _ref_value(ref, self.value)
            if value is not None:
                self.used = True
                self.converted = self.value is None and _empty(ref.get("top1"))
                return value
        return None


def _load_references(grid: Grid) -> list[_Reference]:
    from reproduce.report.reference import load_reference

    refs = []
    for spec in grid.table["reference"]:
        if isinstance(spec, str):
            spec = {"file": spec}
        if not isinstance(spec, dict) or "file" not in spec:
            raise SrvError(f"{grid.path} [table] reference entries need file = '<csv name>'")
        presets = spec.get("presets")
        if presets and grid.preset not in presets:
            continue
        refs.append(_Reference(
            file=spec["file"], title=spec.get("title", spec["file"]), value=spec.get("value"),
            rows=spec.get("rows"), columns=dict(spec.get("columns", {})),
            frame=load_reference(spec["file"])))
    return refs


def _reference_notes(refs: list[_Reference], grid: Grid) -> list[str]:
    notes = []
    for ref in refs:
        where = f"tables/reference/{ref.file}.csv"
        if not len(ref.frame):
            notes.append(f"{ref.title}: no published numbers in {where} yet (the paper's tables "
                         f"were not available to us and are never invented); add them as "
                         f"tables/reference/README.md explains and the column fills in.")
        elif not ref.used:
            notes.append(f"{ref.title}: {where} has no number for these rows.")
        else:
            text = f"{ref.title}: published ImageNet-1k top-1 from {where}"
            if ref.converted:
                text += " (100 - published top-1 error)"
            notes.append(text + ".")
    if refs and grid.preset != "full":
        notes.append("Published columns are ImageNet-1k numbers at full scale, beside ours at "
                     "another scale: compare orderings, not values.")
    return notes


def _cell_settings(grid: Grid, sub: pd.DataFrame) -> dict[str, Any]:
    """The recipe values a reference row may be matched on (from the first run of ``sub``)."""
    out: dict[str, Any] = {}
    first = sub.iloc[0]
    for key in ("opt", "lr", "warmup_epochs", "epochs"):
        if key in first and not _empty(first[key]):
            out[key] = first[key]
    return out


# --- reference tables as tables ------------------------------------------------------------------


def reference_table(name: str) -> Table:
    """A ``tables/reference/<name>.csv`` file as a :class:`Table` (every column as text)."""
    from reproduce.report.reference import load_reference

    df = load_reference(name)
    header = [str(c) for c in df.columns]
    rows = [[Entry(text="" if _empty(v) else (f"{v:g}" if isinstance(v, float) else str(v)))
             for v in rec] for rec in df.itertuples(index=False)]
    align = ["r" if df[c].dtype.kind in "if" else "l" for c in df.columns]
    sources = sorted({str(s) for s in df["source"].dropna()})
    return Table(name=f"reference-{name}", title=f"Published numbers: {name}",
                 caption=f"Published numbers from tables/reference/{name}.csv.",
                 header=header, rows=rows, align=align,
                 provenance="Sources: " + "; ".join(sources) if sources else "Sources: none yet.",
                 label=f"tab:reference-{name}")

"""Tables of a grid's results: gathered with pandas, rendered as Markdown and booktabs LaTeX.

Pipeline: :func:`gather` reads every cell's run directory (``result.json`` for finished runs,
``status.json`` otherwise) into a DataFrame with one row per (cell, seed);
:func:`check_consistent` refuses to mix recipes or code versions; :func:`build_table` aggregates
over seeds (mean, sample std with ddof=1, n) into the paper's layout, adds params / GFLOPs
(:mod:`reproduce.models.flops`) and the published numbers (:mod:`reproduce.report.reference`);
:func:`render_markdown` / :func:`render_latex` write it out.

Rules: a diverged seed is shown as ``div@e<epoch>`` beside the mean of the others, never dropped
or averaged; unfinished cells say so (``1 pending``, ``running e4/15``); the Wang et al. column
stays empty until a user adds the paper's numbers to ``tables/reference/wang2022.csv``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reproduce.errors import SrvError
from reproduce.recipes.grids import Grid
from reproduce.training.runs import read_json

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "Entry",
    "Table",
    "gather",
    "check_consistent",
    "build_table",
    "render_markdown",
    "render_latex",
    "latex_escape",
    "write_table",
    "reference_table",
]

METRIC_TEXT = {"top1": "final-epoch val top-1 (%)", "best_top1": "best-epoch val top-1 (%)"}
AUTO = "auto"
UNFINISHED = ("pending", "partial", "running", "failed")


# --- gathering -----------------------------------------------------------------------------------



def run_seeds(grid: Grid, configs: Iterable[dict[str, Any]]) -> set[int]:
    """The seeds of the run configs that belong to the grid (one of its models, its recipe)."""
    models = {c.model for c in grid.cells()}
    return {int(c["seed"]) for c in configs
            if c.get("model") in models and c.get("recipe") == grid.recipe and "seed" in c}


def discover_seeds(grid: Grid, runs_root: Path) -> list[int]:
    """The preset's seeds plus every seed found in ``runs_root`` for the grid's models and
    recipe (so ``srv table`` shows what ``srv ablate --seeds ...`` ran)."""
    configs = (read_json(p) or {} for p in runs_root.glob("*/config.json"))
    return sorted(set(grid.seeds) | run_seeds(grid, configs))


def gather(grid: Grid, runs_root: Path | str, states: list[Any] | None = None) -> pd.DataFrame:
    """One row per (cell, seed): the axis labels, status and result of its run.

    ``states`` (from :func:`reproduce.experiments.cells.plan`) saves resolving the configs again.
    Columns: one per axis (the value label, named ``axis:<name>``), ``seed``, ``model``,
    ``stem``, ``run``, ``status``, ``epoch``, ``epochs``, ``reason``, ``top1``, ``best_top1``,
    ``n_val``, ``params_m``, ``skipped_steps`` (fp16 steps the GradScaler skipped, when the engine
    records them), ``img_size``, ``dataset``, ``num_classes``, ``stem_width``, ``recipe``,
    ``git_commit``, ``git_dirty``, ``code_version``, ``finished``.
    """
    import pandas as pd

    from reproduce.experiments.cells import plan

    runs_root = Path(runs_root)
    if states is None:
        states = plan(grid, runs_root)
    rows = []
    for st in states:
        cfg = st.cfg
        result = st.info.get("result") or read_json(st.run_dir / "result.json") or {}
        env = read_json(st.run_dir / "env.json") or {}
        config = read_json(st.run_dir / "config.json") or {}
        recipe = cfg.recipe
        row: dict[str, Any] = {axis_column(a): label for a, label in st.cell.labels}
        row.update(
            seed=st.cell.seed, model=cfg.model, stem=recipe.stem, run=cfg.run_name,
            opt=recipe.opt, lr=recipe.lr, warmup_epochs=recipe.warmup_epochs,
            status=st.status, epoch=st.info.get("epoch"), epochs=recipe.epochs,
            reason=st.info.get("reason"),
            top1=result.get("top1"), best_top1=result.get("best_top1"),
            n_val=result.get("n_val"), params_m=result.get("params_m"),
            skipped_steps=result.get("skipped_steps"),
            img_size=recipe.img_size, dataset=recipe.dataset,
            num_classes=recipe.num_classes or (config.get("derived") or {}).get("num_classes"),
            stem_width=recipe.stem_width, recipe=cfg.recipe_name,
            git_commit=result.get("git_commit", env.get("git_commit")),
            git_dirty=result.get("git_dirty", env.get("git_dirty")),
            code_version=result.get("code_version", env.get("code_version")),
            finished=result.get("finished"),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def check_consistent(df: pd.DataFrame, name: str, force: bool = False) -> list[str]:
    """Refuse results that come from different recipes or code versions (git commit or package
    version) unless ``force``; returns the provenance notes for a forced mix."""
    started = df[df["status"].isin(["done", "diverged"])]
    notes: list[str] = []
    for column, what in (("recipe", "recipes"), ("code_version", "srv versions"),
                         ("git_commit", "git commits")):
        width = 7 if column == "git_commit" else None
        values = started[column].fillna("unknown").map(lambda v, w=width: str(v)[:w])
        counts = values.value_counts()
        if len(counts) > 1:
            listing = ", ".join(f"{v} ({n} runs)" for v, n in counts.items())
            if not force:
                raise SrvError(
                    f"table {name!r}: the results come from {len(counts)} {what}: {listing}; "
                    f"delete the run directories of the odd ones and rerun 'srv ablate {name}', "
                    f"or pass --force to mix them (the table then lists every version)")
            notes.append(f"mixed {what} (--force): {listing}")
    return notes


# --- table cells ---------------------------------------------------------------------------------


@dataclass
class Entry:
    """One table cell: text, or a number (mean ± std over n) with notes such as ``div@e3``."""

    text: str | None = None
    mean: float | None = None
    std: float | None = None
    n: int = 0
    notes: list[str] = field(default_factory=list)
    show_n: bool = False
    bold: bool = False
    fmt: str = ".1f"

    @property
    def is_number(self) -> bool:
        return self.mean is not None

    def _parts(self, pm: str, bold: tuple[str, str], esc: Any) -> str:
        if self.text is not None:
            return esc(self.text)
        out = ""
        if self.mean is not None:
            mean = format(self.mean, self.fmt)
            out = f"{bold[0]}{mean}{bold[1]}" if self.bold else mean
            if self.std is not None and not math.isnan(self.std):
                out += f" {pm} {format(self.std, self.fmt)}"
            if self.show_n:
                out += f" (n={self.n})"
        if self.notes:
            out = "; ".join([out, *map(esc, self.notes)] if out else list(map(esc, self.notes)))
        return out

    def markdown(self) -> str:
        return self._parts("±", ("**", "**"), lambda s: s.replace("|", "\\|"))

    def latex(self) -> str:
        return self._parts(r"$\pm$", (r"\textbf{", "}"), latex_escape)


@dataclass
class Table:
    """A rendered-to-be table: headers, rows of entries, notes and the provenance line."""

    name: str
    title: str
    caption: str
    header: list[str]
    rows: list[list[Entry]]
    align: list[str]  # "l" or "r" per column
    group: tuple[str, int, int] | None = None  # spanning header (text, first column, count)
    notes: list[str] = field(default_factory=list)
    provenance: str = ""
    label: str = ""
    kind: str = "grid"
    extra: list[Table] = field(default_factory=list)  # rendered after this one (statistics)


# --- aggregation ---------------------------------------------------------------------------------


def _div_note(epochs: list[Any]) -> str:
    return "div@" + ",".join(f"e{int(e)}" if e == e and e is not None else "e?" for e in epochs)


def _aggregate(sub: pd.DataFrame, metric: str) -> Entry:
    """Mean ± sample std over the finished seeds, with the rest accounted for in notes."""
    done = sub[sub["status"] == "done"][metric].dropna().astype(float)
    entry = Entry()
    if len(done):
        entry.mean = float(done.mean())
        entry.std = float(done.std(ddof=1)) if len(done) > 1 else None
    entry.n = int(len(done))
    diverged = sub[sub["status"] == "diverged"]
    if len(diverged):
        entry.notes.append(_div_note(sorted(diverged["epoch"].tolist())))
    for status in UNFINISHED:
        part = sub[sub["status"] == status]
        if not len(part):
            continue
        if status in ("running", "partial"):
            done_ep = ",".join(f"e{int(e or 0)}/{int(t)}" for e, t in
                               zip(part["epoch"], part["epochs"], strict=True))
            entry.notes.append(f"{status} {done_ep}")
        else:
            entry.notes.append(f"{len(part)} {status}")
    if not len(done) and not entry.notes:
        entry.text = "—"
    return entry


def _bold_best(entries: list[Entry]) -> None:
    numbers = [e for e in entries if e.is_number]
    if len(numbers) < 2:
        return
    best = max(e.mean for e in numbers if e.mean is not None)
    for e in numbers:
        e.bold = e.mean is not None and format(e.mean, e.fmt) == format(best, e.fmt)


def _fmt_time(finished: pd.Series) -> str:
    dates = sorted({str(f)[:10] for f in finished.dropna()})
    if not dates:
        return "no finished runs yet"
    return dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"


def provenance(grid: Grid, df: pd.DataFrame, metric: str, mixed: list[str]) -> str:
    started = df[df["status"].isin(["done", "diverged"])]
    commits = sorted({str(c)[:7] for c in started["git_commit"].dropna()})
    versions = sorted({str(v) for v in started["code_version"].dropna()})
    dirty = bool(started["git_dirty"].fillna(False).astype(bool).any())
    code = f"srv {', '.join(versions) or '?'}, git {', '.join(commits) or 'unknown'}"
    if dirty:
        code += " (uncommitted changes)"
    n_val = sorted({int(v) for v in started["n_val"].dropna()})
    on = f" on {', '.join(map(str, n_val))} val images" if n_val else ""
    seeds = sorted({int(s) for s in df["seed"]})
    text = (f"Provenance: {code}; results of {_fmt_time(started['finished'])}; scale: "
            f"{grid.scale}; recipe {grid.recipe}; seeds {', '.join(map(str, seeds))}; "
            f"{METRIC_TEXT[metric]}{on}.")
    if mixed:
        text += " " + "; ".join(mixed) + "."
    return text


# --- references ----------------------------------------------------------------------------------


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


# --- complexity ----------------------------------------------------------------------------------


def _num_classes(row: pd.Series) -> int:
    n = row.get("num_classes")
    if n and n == n:
        return int(n)
    return {"digits": 10, "cifar10": 10, "cifar100": 100}.get(str(row.get("dataset")), 1000)


def _complexity(sub: pd.DataFrame) -> tuple[float, float] | None:
    """(params M, GFLOPs) of the one architecture a table row trains, counted with fvcore."""
    arch = sub[["model", "stem", "stem_width", "img_size"]].drop_duplicates()
    if len(arch) != 1:
        return None
    row = sub.iloc[0]
    from reproduce.models.flops import count

    kwargs: dict[str, Any] = {"num_classes": _num_classes(row)}
    if row["stem"]:
        kwargs["stem"] = row["stem"]
    if row["stem_width"]:
        kwargs["stem_width"] = int(row["stem_width"])
    rec = count(str(row["model"]), int(row["img_size"]), **kwargs)
    return rec.params_m, rec.gflops


# --- statistics ----------------------------------------------------------------------------------


@dataclass
class CellStats:
    """The statistics of one table cell (a row, or a row x column combination)."""

    key: tuple[str, ...]  # row-axis labels, then column-axis labels
    values: list[float]  # the metric of the finished seeds
    interval: Any  # reproduce.report.stats.Interval | None
    diverged: int  # diverged runs
    started: int  # finished + diverged runs
    baseline: tuple[str, ...] | None = None  # the key compared against (None: not compared)
    diff: Any = None  # reproduce.report.stats.Difference | None
    p_holm: float | None = None

    @property
    def n(self) -> int:
        return len(self.values)


def metric_values(sub: pd.DataFrame, metric: str) -> list[float]:
    """The metric of the finished ("done") runs of ``sub``: one value per seed."""
    return [float(v) for v in sub[sub["status"] == "done"][metric].dropna()]


def baseline_label(grid: Grid, rows_ax: list[str], baseline: str | None) -> str | None:
    """The label of the first row axis to compare every other row with (see build_table)."""
    if baseline is None or baseline in ("", "none"):
        return None
    axis = grid.axis(rows_ax[0])
    if baseline == AUTO:
        return axis.labels[0] if len(axis.labels) > 1 else None
    for label in axis.labels:
        if baseline in (label, axis.show(label)):
            return label
    raise SrvError(f"--baseline {baseline!r} is not a row of table {grid.name!r}; choose from "
                   f"{', '.join(axis.labels)} (or none)")


def cell_stats(grid: Grid, df: pd.DataFrame, rows_ax: list[str], cols_ax: list[str],
               metric: str, baseline: str | None) -> list[CellStats]:
    """Per cell: mean with its t-interval, the divergence count, and (unless it is the baseline)
    Welch's test against the baseline row with the same other labels; p-values Holm-adjusted
    over every comparison of the table."""
    from reproduce.report import stats

    axes = rows_ax + cols_ax
    out: list[CellStats] = []
    for row in _ordered(grid, rows_ax):
        for col in _ordered(grid, cols_ax):
            key = tuple(row) + tuple(col)
            sub = df[_match(df, axes, key)]
            values = metric_values(sub, metric)
            div = int((sub["status"] == "diverged").sum())
            out.append(CellStats(key, values, stats.mean_interval(values), div,
                                 len(values) + div))
    base = baseline_label(grid, rows_ax, baseline)
    if base is not None:
        by_key = {cs.key: cs for cs in out}
        for cs in out:
            if cs.key[0] == base:
                continue
            ref = by_key.get((base, *cs.key[1:]))
            if ref is None:
                continue
            cs.baseline = ref.key
            cs.diff = stats.welch(cs.values, ref.values)
        tested = [cs for cs in out if cs.diff is not None]
        for cs, p in zip(tested, stats.holm([cs.diff.p for cs in tested]), strict=True):
            cs.p_holm = p
    return out


def fmt_p(p: float | None) -> str:
    """``0.034``, ``<0.001``; ``—`` for no test."""
    if p is None or p != p:
        return "—"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _stat_header(base_name: str | None, any_div: bool) -> list[str]:
    """The headers of :func:`_stat_entries`' columns."""
    return (["95% CI"] + ([f"Δ vs {base_name} [95% CI]", "p", "Holm p"] if base_name else [])
            + (["diverged"] if any_div else []))


def _stat_entries(cs: Any, base_name: str | None, any_div: bool) -> list[Entry]:
    """A cell's statistics columns: its interval, then (against the baseline) the difference,
    p and Holm p, then the divergence rate when any run diverged."""
    out = [Entry(text=_ci_text(cs.interval))]
    if base_name is not None:
        out += [Entry(text=_diff_text(cs)),
                Entry(text=fmt_p(cs.diff.p if cs.diff else None)),
                Entry(text=fmt_p(cs.p_holm))]
    if any_div:
        out.append(Entry(text=_div_text(cs)))
    return out


def _ci_text(interval: Any) -> str:
    if interval is None:
        return "—"
    if not interval.has_interval:
        return "n=1: none"
    return f"[{interval.low:.1f}, {interval.high:.1f}]"


def _diff_text(cs: CellStats) -> str:
    if cs.baseline is None:
        return "reference" if cs.values or cs.started else "—"
    if cs.diff is None:
        return "n<2: no test"
    d = cs.diff
    return f"{d.diff:+.1f} [{d.low:.1f}, {d.high:.1f}]"


def _div_text(cs: CellStats) -> str:
    from reproduce.report import stats

    if not cs.started:
        return "—"
    lo, hi = stats.wilson(cs.diverged, cs.started)
    return f"{cs.diverged}/{cs.started} [{100 * lo:.0f}, {100 * hi:.0f}]%"


def _stats_notes(base_name: str | None, n_tests: int, any_div: bool) -> list[str]:
    notes = ["95% CI: Student-t interval of the mean over the n finished seeds (diverged runs "
             "excluded); n=1: no interval exists (no variance estimate), none is shown."]
    if base_name is not None:
        family = (f"Holm-adjusted over the {n_tests} comparison{'s' if n_tests != 1 else ''} "
                  f"of this table" if n_tests else "no comparison has 2 finished seeds in both "
                  "arms yet (n<2: no test)")
        notes.append(f"Δ vs {base_name}: difference of means with Welch's 95% interval; p: "
                     f"Welch's two-sided t-test (exact permutation test when neither arm "
                     f"varies); Holm p: {family}.")
    if any_div:
        notes.append("diverged: diverged / started runs with the Wilson 95% interval.")
    return notes


def _stats_table(grid: Grid, rows_ax: list[str], cols_ax: list[str], cells: list[CellStats],
                 base_name: str | None, any_div: bool) -> Table:
    """A 2-D table's statistics in long format: one row per (row, column) cell."""
    header = [_axis_header(grid, a) for a in rows_ax + cols_ax]
    header += ["n", "mean", *_stat_header(base_name, any_div)]
    align = ["l"] * len(rows_ax + cols_ax) + ["r"] * (len(header) - len(rows_ax + cols_ax))
    body = []
    for cs in cells:
        row = [Entry(text=grid.axis(a).show(v)) for a, v in zip(rows_ax + cols_ax, cs.key,
                                                                 strict=True)]
        row += [Entry(text=str(cs.n)),
                Entry(mean=cs.interval.mean) if cs.interval else Entry(text="—")]
        row += _stat_entries(cs, base_name, any_div)
        body.append(row)
    n_tests = sum(cs.diff is not None for cs in cells)
    return Table(name=f"{grid.name}-stats", title="Statistics",
                 caption=f"{grid.title}: statistics per cell.", header=header, rows=body,
                 align=align, notes=_stats_notes(base_name, n_tests, any_div),
                 label=f"{grid.table['label'] or f'tab:{grid.name}'}-stats")


# --- building ------------------------------------------------------------------------------------


def _axis_header(grid: Grid, name: str) -> str:
    axis = grid.axis(name)
    return axis.title or name


def build_table(grid: Grid, df: pd.DataFrame, metric: str | None = None, force: bool = False,
                flops: bool = True, baseline: str | None = AUTO) -> Table:
    """The paper's layout of a grid's results (see the module docstring), with the statistics of
    :mod:`.stats` against the ``baseline`` row (a label of the first row axis; ``auto``:
    the grid's first row, patchify in the paper's grids; None or ``none``: no comparisons)."""
    metric = metric or grid.table["metric"]
    mixed = check_consistent(df, grid.name, force)
    if grid.table_kind == "edf":
        table = _build_edf(grid, df)
    else:
        table = _build_grid(grid, df, metric, flops, baseline)
    table.provenance = provenance(grid, df, metric, mixed)
    for extra in table.extra:
        extra.provenance = table.provenance
    return table


def axis_column(name: str) -> str:
    """The DataFrame column of an axis (prefixed: an axis may be named like a field, e.g. lr)."""
    return f"axis:{name}"


def _match(df: pd.DataFrame, axes: list[str], combo: tuple[str, ...] | list[str]) -> pd.Series:
    """Rows of ``df`` whose axis labels equal ``combo``."""
    if not axes:
        return df["seed"] == df["seed"]
    return (df[[axis_column(a) for a in axes]] == list(combo)).all(axis=1)


def _ordered(grid: Grid, axes: list[str]) -> list[tuple[str, ...]]:
    """Combinations of the given axes' labels in grid order."""
    combos: list[tuple[str, ...]] = [()]
    for name in axes:
        combos = [c + (label,) for c in combos for label in grid.axis(name).labels]
    return combos


def _build_grid(grid: Grid, df: pd.DataFrame, metric: str, flops: bool,
                baseline: str | None = AUTO) -> Table:
    rows_ax, cols_ax = grid.row_axes, grid.column_axes
    other = [a.name for a in grid.axes if a.name not in rows_ax + cols_ax]
    if other:  # an axis that is neither rows nor columns becomes extra rows
        rows_ax = rows_ax + other
    refs = _load_references(grid)
    header = [_axis_header(grid, a) for a in rows_ax]
    align = ["l"] * len(rows_ax)
    body: list[list[Entry]] = []
    notes: list[str] = []
    multi_seed = bool(len(df)) and df["seed"].nunique() > 1
    any_div = bool((df["status"] == "diverged").any())
    any_unfinished = bool(df["status"].isin(UNFINISHED).any())
    row_combos = _ordered(grid, rows_ax)
    stat_cells = cell_stats(grid, df, rows_ax, cols_ax, metric, baseline) if len(df) else []
    with_stats = any(cs.n >= 2 for cs in stat_cells)
    base = baseline_label(grid, rows_ax, baseline) if with_stats else None
    base_name = grid.axis(rows_ax[0]).show(base) if base is not None else None
    n_tests = sum(cs.diff is not None for cs in stat_cells)
    extra: list[Table] = []

    if not cols_ax:
        header += ["top-1 (%)", "n"]
        align += ["r", "r"]
        if with_stats:
            header += _stat_header(base_name, any_div)
            align += ["r"] * (len(header) - len(align))
        with_cx = flops and not df.empty
        cx_rows: list[tuple[float, float] | None] = []
        if with_cx:
            for combo in row_combos:
                sub = df[_match(df, rows_ax, combo)]
                try:
                    cx_rows.append(_complexity(sub))
                except SrvError:
                    cx_rows.append(None)
            with_cx = any(c is not None for c in cx_rows)
        if with_cx:
            header += ["Params (M)", "GFLOPs"]
            align += ["r", "r"]
        header += [ref.title for ref in refs]
        align += ["r"] * len(refs)
        metric_entries = []
        for i, combo in enumerate(row_combos):
            sub = df[_match(df, rows_ax, combo)]
            entry = _aggregate(sub, metric)
            metric_entries.append(entry)
            row = [Entry(text=grid.axis(a).show(v)) for a, v in zip(rows_ax, combo, strict=True)]
            row += [entry, Entry(text=str(entry.n))]
            if with_stats:
                row += _stat_entries(stat_cells[i], base_name, any_div)
            if with_cx:
                cx = cx_rows[i]
                row += ([Entry(mean=cx[0], fmt=".2f"), Entry(mean=cx[1], fmt=".3g")] if cx
                        else [Entry(text="—"), Entry(text="—")])
            first = sub.iloc[0] if len(sub) else None
            cell_info = ({"model": first["model"], "stem": first["stem"]}
                         if first is not None else {"model": "", "stem": ""})
            if first is not None:
                cell_info.update(_cell_settings(grid, sub))
            for ref in refs:
                value = ref.lookup(combo[0] if len(rows_ax) == 1 else None, {}, cell_info)
                row.append(Entry(mean=value) if value is not None else Entry(text=""))
            body.append(row)
        _bold_best(metric_entries)
        if with_stats:
            notes += _stats_notes(base_name, n_tests, any_div)
        if with_cx:
            notes.append("Params and GFLOPs counted with fvcore at the run's input size and "
                         "classes; GFLOPs: 1 fused multiply-add = 1 FLOP, batch 1.")
        group = None
    else:
        col_combos = _ordered(grid, cols_ax)
        if len(cols_ax) == 1:
            axis = grid.axis(cols_ax[0])
            col_heads = [axis.show(c[0]) for c in col_combos]
            group = (_axis_header(grid, cols_ax[0]), len(header), len(col_heads))
        else:
            col_heads = [", ".join(f"{_axis_header(grid, a)}={grid.axis(a).show(v)}"
                                   for a, v in zip(cols_ax, c, strict=True)) for c in col_combos]
            group = None
        header += col_heads
        align += ["r"] * len(col_heads)
        columns: list[list[Entry]] = [[] for _ in col_combos]
        for combo in row_combos:
            row = [Entry(text=grid.axis(a).show(v)) for a, v in zip(rows_ax, combo, strict=True)]
            for j, ccombo in enumerate(col_combos):
                mask = _match(df, rows_ax + cols_ax, list(combo) + list(ccombo))
                entry = _aggregate(df[mask], metric)
                entry.show_n = multi_seed and entry.is_number
                columns[j].append(entry)
                row.append(entry)
            body.append(row)
        for col in columns:
            _bold_best(col)
        for ref in refs:  # published numbers as extra rows
            for combo in row_combos:
                sub = df[_match(df, rows_ax, combo)]
                if not len(sub):
                    continue
                cells = []
                for ccombo in col_combos:
                    mask = _match(sub, cols_ax, ccombo)
                    csub = sub[mask]
                    info = {"model": csub.iloc[0]["model"], "stem": csub.iloc[0]["stem"],
                            **_cell_settings(grid, csub)} if len(csub) else {}
                    value = ref.lookup(combo[0] if len(rows_ax) == 1 else None,
                                       dict(zip(cols_ax, ccombo, strict=True)), info) \
                        if info else None
                    cells.append(Entry(mean=value) if value is not None else Entry(text=""))
                if any(c.is_number for c in cells):
                    label = [Entry(text=f"{grid.axis(rows_ax[0]).show(combo[0])} "
                                        f"({ref.title})")]
                    label += [Entry(text="") for _ in rows_ax[1:]]
                    body.append(label + cells)
        if with_stats:
            extra.append(_stats_table(grid, rows_ax, cols_ax, stat_cells, base_name,
                                       any_div))
            notes.append("Intervals, differences and tests: the Statistics table below.")
    if not with_stats:
        notes.append("One seed per cell (n=1): no std and no interval exists (no variance "
                     "estimate), so no test either; add seeds with --seeds 0,1,2.")
    notes[:0] = [_stat_note(multi_seed)]
    skipped = df["skipped_steps"].fillna(0).astype(float) if "skipped_steps" in df else None
    if skipped is not None and (skipped > 0).any():
        notes.append(f"fp16: {int((skipped > 0).sum())} finished run(s) skipped "
                     f"{int(skipped.sum())} step(s) on gradient overflow (GradScaler), "
                     f"at most {int(skipped.max())} in one run.")
    if any_div:
        notes.append("div@eN: the run diverged (non-finite loss or gradient) in epoch N; shown, "
                     "never averaged.")
    if any_unfinished:
        notes.append("pending / partial / running / failed: runs not finished yet (srv ablate "
                     f"{grid.name} --dry-run shows them).")
    notes += _reference_notes(refs, grid)
    return Table(name=grid.name, title=grid.title, caption=grid.table["caption"] or grid.title,
                 header=header, rows=body, align=align, group=group, notes=notes,
                 label=grid.table["label"] or f"tab:{grid.name}", extra=extra)


def _stat_note(multi_seed: bool) -> str:
    if multi_seed:
        return ("mean ± sample std (ddof=1) over n seeds; bold: best mean in its column.")
    return "bold: best in its column."


def _cell_settings(grid: Grid, sub: pd.DataFrame) -> dict[str, Any]:
    """The recipe values a reference row may be matched on (from the first run of ``sub``)."""
    out: dict[str, Any] = {}
    first = sub.iloc[0]
    for key in ("opt", "lr", "warmup_epochs", "epochs"):
        if key in first and not _empty(first[key]):
            out[key] = first[key]
    return out


def _build_edf(grid: Grid, df: pd.DataFrame) -> Table:
    rows_ax = grid.row_axes
    header = [_axis_header(grid, a) for a in rows_ax]
    header += ["samples", "done", "diverged", "other", "best err (%)", "p25 err (%)",
               "median err (%)"]
    align = ["l"] * len(rows_ax) + ["r"] * 7
    body = []
    for combo in _ordered(grid, rows_ax):
        sub = df[_match(df, rows_ax, combo)]
        errors = edf_errors(sub)
        done = int((sub["status"] == "done").sum())
        div = int((sub["status"] == "diverged").sum())
        row = [Entry(text=grid.axis(a).show(v)) for a, v in zip(rows_ax, combo, strict=True)]
        row += [Entry(text=str(len(sub))), Entry(text=str(done)), Entry(text=str(div)),
                Entry(text=str(len(sub) - done - div))]
        if errors:
            import numpy as np

            arr = np.array(errors)
            row += [Entry(mean=float(arr.min())), Entry(mean=float(np.percentile(arr, 25))),
                    Entry(mean=float(np.median(arr)))]
        else:
            row += [Entry(text="—")] * 3
        body.append(row)
    notes = [
        "Top-1 error = 100 - final-epoch val top-1; a diverged run counts as 100% error (it is "
        "a result of its (lr, wd) sample); percentiles over finished and diverged runs.",
        "(lr, wd) drawn log-uniformly from the grid's ranges; the same samples for every row "
        "(paired design); other = pending, partial, running or failed.",
    ]
    return Table(name=grid.name, title=grid.title, caption=grid.table["caption"] or grid.title,
                 header=header, rows=body, align=align, notes=notes,
                 label=grid.table["label"] or f"tab:{grid.name}", kind="edf")


def edf_errors(sub: pd.DataFrame) -> list[float]:
    """Top-1 errors of the finished runs, diverged ones as 100%."""
    errors = [100.0 - float(t) for t in sub[sub["status"] == "done"]["top1"].dropna()]
    errors += [100.0] * int((sub["status"] == "diverged").sum())
    return sorted(errors)


# --- rendering -----------------------------------------------------------------------------------


def render_markdown(table: Table, level: int = 2) -> str:
    """A Markdown section: title, caption, the table (tabulate via pandas), provenance, notes;
    then its extra tables (statistics) as subsections."""
    import pandas as pd

    header = list(table.header)
    if table.group is not None:  # Markdown has no spanning header: "warmup epochs: 0"
        text, first, count = table.group
        for j in range(first, first + count):
            header[j] = f"{text}: {header[j]}"
    frame = pd.DataFrame([[e.markdown() for e in row] for row in table.rows], columns=header)
    colalign = ["left" if a == "l" else "right" for a in table.align]
    body = frame.to_markdown(index=False, colalign=colalign, disable_numparse=True)
    lines = [f"{'#' * level} {table.title}", ""]
    if table.caption and table.caption != table.title and level == 2:
        lines += [table.caption, ""]
    lines += [body, ""]
    if level == 2:
        lines += [table.provenance, ""]
    lines += [f"- {note}" for note in table.notes]
    text = "\n".join(lines).rstrip() + "\n"
    for extra in table.extra:
        text += "\n" + render_markdown(extra, level + 1)
    return text


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "±": r"$\pm$", "×": r"$\times$", "≤": r"$\le$",
                  "≥": r"$\ge$", "—": "---", "–": "--", "·": r"$\cdot$", "→": r"$\to$",
                  "≈": r"$\approx$", "Δ": r"$\Delta$", "’": "'", "“": "``", "”": "''", "²": r"$^2$",
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters; common non-ASCII symbols become LaTeX commands."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def render_latex(table: Table) -> str:
    """A booktabs ``table`` float (needs ``\\usepackage{booktabs}``): caption, label, escaped
    cells, a spanning header over a column axis, provenance and notes below the rule."""
    cols = "".join(table.align)
    lines = [
        f"% Generated by srv table {table.name}; needs \\usepackage{{booktabs}}.",
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(table.caption)}}}",
        rf"\label{{{latex_escape(table.label)}}}",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
    ]
    if table.group is not None:
        text, first, count = table.group
        cells = [""] * first + [rf"\multicolumn{{{count}}}{{c}}{{{latex_escape(text)}}}"]
        cells += [""] * (len(table.header) - first - count)
        lines.append(" & ".join(cells) + r" \\")
        lines.append(rf"\cmidrule(lr){{{first + 1}-{first + count}}}")
    lines.append(" & ".join(latex_escape(h) for h in table.header) + r" \\")
    lines.append(r"\midrule")
    for row in table.rows:
        lines.append(" & ".join(e.latex() for e in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    foot = [latex_escape(table.provenance), *(latex_escape(n) for n in table.notes)]
    lines.append(r"\par\smallskip")
    lines.append(r"\parbox{\linewidth}{\footnotesize " + r" \\ ".join(foot) + "}")
    lines.append(r"\end{table}")
    text = "\n".join(lines) + "\n"
    for extra in table.extra:
        text += "\n" + render_latex(extra)
    return text


def write_table(text: str, path: Path) -> Path:
    """Write a table file atomically, readable like any file (:mod:`reproduce.utils.atomic`)."""
    from reproduce.utils.atomic import atomic_write_text

    return atomic_write_text(path, text)


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


# --- the report of a grid: table files and plots -------------------------------------------------


def output_stem(grid: Grid) -> str:
    """``stem`` at the grid's default preset, ``stem-full`` at another: scales never overwrite
    each other's tables."""
    return grid.name if grid.preset == grid.default_preset else f"{grid.name}-{grid.preset}"


@dataclass
class Report:
    table: Table
    texts: dict[str, str]  # format -> text
    paths: list[Path]


def report(grid: Grid, runs_root: Path | str, tables_dir: Path | str | None,
           formats: tuple[str, ...] = ("markdown",), states: list[Any] | None = None,
           metric: str | None = None, force: bool = False, flops: bool = True,
           plot: bool = True, baseline: str | None = AUTO) -> Report:
    """Build a grid's table, render it, and (unless ``tables_dir`` is None) write
    ``<tables_dir>/<stem>.md`` / ``.tex`` and the plot ``<stem>.png`` (EDF: ``<stem>-edf.png``)."""
    runs_root = Path(runs_root)
    df = gather(grid, runs_root, states)
    table = build_table(grid, df, metric=metric, force=force, flops=flops, baseline=baseline)
    stem = output_stem(grid)
    paths: list[Path] = []
    image: Path | None = None
    if tables_dir is not None and plot:
        from reproduce.report import plots

        tables_dir = Path(tables_dir)
        if grid.table_kind == "edf":
            errors = {}
            for combo in _ordered(grid, grid.row_axes):
                sub = df[_match(df, grid.row_axes, combo)]
                label = ", ".join(grid.axis(a).show(v)
                                  for a, v in zip(grid.row_axes, combo, strict=True))
                errors[label] = edf_errors(sub)
            image = plots.plot_edf(errors, tables_dir / f"{stem}-edf.png", grid.title)
        else:
            labels = [", ".join(a.show(row[axis_column(a.name)]) for a in grid.axes)
                      for _, row in df.iterrows()]
            image = plots.plot_curves(df, runs_root, labels, tables_dir / f"{stem}.png",
                                      grid.title)
        if image is not None:
            paths.append(image)
    texts: dict[str, str] = {}
    for fmt in formats:
        if fmt == "markdown":
            text = render_markdown(table)
            if image is not None:
                text += f"\n![{'EDF' if grid.table_kind == 'edf' else 'training curves'}]" \
                        f"({image.name})\n"
            suffix = ".md"
        elif fmt == "latex":
            text, suffix = render_latex(table), ".tex"
        else:
            raise SrvError(f"unknown table format {fmt!r}: markdown or latex")
        texts[fmt] = text
        if tables_dir is not None:
            paths.append(write_table(text, Path(tables_dir) / f"{stem}{suffix}"))
    return Report(table, texts, paths)

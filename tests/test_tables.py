"""srv table: gathering run directories with pandas, aggregation, Markdown / LaTeX (golden files).

The run directories here are written by hand in the engine's format (config.json, env.json,
status.json, metrics.jsonl, result.json); tests/test_ablate.py makes real ones end to end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.errors import SrvError
from reproduce.experiments.export import grid_records, grid_seeds
from reproduce.recipes.grids import load_grid
from reproduce.report.records import frame
from reproduce.report.render import latex_escape, render_latex, render_markdown
from reproduce.report.tables import build_table
from reproduce.report.tables import report as make_report
from reproduce.training.config import resolve_config

runner = CliRunner()
GOLDEN = Path(__file__).parent / "golden"
#: SRV_UPDATE_GOLDEN=1 pytest tests/test_tables.py rewrites the golden files (then review the diff)
UPDATE = os.environ.get("SRV_UPDATE_GOLDEN") == "1"

STEM_GRID = """
title = "Stem ablation (test)"
[table]
rows = ["stem"]
caption = "Top-1 by stem; 100% of runs_shown & escaped #1."
[[table.reference]]
file = "pub"
title = "Pub et al. 4GF"
rows = { patch = { model = "vitp-4gf", stem = "patch" }, conv = { model = "vitc-4gf" } }
[[table.reference]]
file = "wang2022"
title = "Wang et al."
rows = { patch = { model = "vit-s-patch" }, conv = { model = "vit-s-conv" } }
[axes.stem]
key = "model"
format = "vit-mini-{value}"
values = ["patch", "conv", "conv-nobn"]
labels = { patch = "patchify", conv = "conv, BN + ReLU", conv-nobn = "conv_ReLU only" }
[presets.mini]
recipe = "mini"
scale = "mini: digits (test)"
seeds = [0, 1]
set = { epochs = 15, img_size = 16 }
"""

WARMUP_GRID = """
title = "Warmup (test)"
[table]
rows = ["stem"]
columns = ["warmup"]
[[table.reference]]
file = "wang2022"
title = "Wang et al."
rows = { patch = { model = "vit-s-patch" }, conv = { model = "vit-s-conv" } }
columns = { warmup = "warmup_epochs" }
[axes.stem]
key = "model"
format = "vit-mini-{value}"
values = ["patch", "conv"]
[axes.warmup]
key = "warmup_epochs"
title = "warmup epochs"
values = [0.0, 5.0]
[presets.mini]
recipe = "mini"
seeds = [0]
set = { epochs = 15, img_size = 16 }
"""

WANG_HEADER = ("model,stem,setting,optimizer,lr,warmup_epochs,epochs,top1,top1_err,params_m,"
               "gflops,source,note\n")


def gather(grid, runs):  # noqa: ANN001, ANN201
    """A grid's runs folder as the report's frame (export, then the report's view)."""
    return frame(grid, grid_records(grid, runs))


def write_run(runs_root: Path, model: str, overrides: dict[str, Any], status: str,
              top1: float | None = None, epoch: int | None = None, seed: int = 0,
              commit: str = "abc1234def5678", finished: str = "2026-11-27T12:00:00+0000",
              reason: str | None = None, pid: int = 999_999_999, host: str | None = None,
              recipe: str = "mini") -> Path:
    """A run directory in the engine's format (status: done | diverged | failed | running)."""
    cfg = resolve_config(model, recipe, {**overrides, "seed": seed})
    run = runs_root / cfg.run_name
    run.mkdir(parents=True, exist_ok=True)
    epochs = cfg.recipe.epochs
    epoch = epochs if epoch is None else epoch
    (run / "config.json").write_text(json.dumps({**cfg.to_dict(), "derived": {}}))
    (run / "env.json").write_text(json.dumps({"git_commit": commit, "git_dirty": False,
                                              "code_version": "0.1.0"}))
    done_epochs = epoch if status != "diverged" else epoch - 1
    rows = [{"epoch": e, "train_loss": 2.3 / e, "val_top1": (top1 or 50.0) * e / epochs}
            for e in range(1, done_epochs + 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    engine_status = {"done": "completed"}.get(status, status)
    (run / "status.json").write_text(json.dumps({
        "status": engine_status, "epoch": epoch, "step": 10 * epoch, "reason": reason,
        "pid": pid, "host": host or socket.gethostname(), "updated": finished}))
    if status == "done":
        (run / "result.json").write_text(json.dumps({
            "model": model, "recipe": recipe, "seed": seed, "config_hash": cfg.hash,
            "top1": top1, "top5": 99.0, "best_top1": (top1 or 0) + 0.5, "best_epoch": epochs,
            "epochs": epochs, "n_val": 360, "params_m": 0.7, "git_commit": commit,
            "git_dirty": False, "code_version": "0.1.0", "finished": finished}))
    return run


@pytest.fixture
def tables_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tables directory whose reference/ holds known CSVs (not the repository's)."""
    ref = tmp_path / "tables" / "reference"
    ref.mkdir(parents=True)
    (ref / "pub.csv").write_text(
        "model,stem,top1_err,source\n"
        "vitp-4gf,patch,23.2,Pub et al. Table 9\n"
        "vitc-4gf,,20.9,Pub et al. Table 9\n")
    (ref / "wang2022.csv").write_text(WANG_HEADER)
    monkeypatch.setenv("SRV_TABLES_DIR", str(tmp_path / "tables"))
    return tmp_path / "tables"


def _grid(tmp_path: Path, text: str, name: str, **kwargs: Any):
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return load_grid(path, **kwargs)


def stem_runs(runs: Path, commit2: str = "abc1234def5678") -> None:
    common = {"epochs": 15, "img_size": 16}
    write_run(runs, "vit-mini-patch", common, "done", 70.0, seed=0)
    write_run(runs, "vit-mini-patch", common, "done", 67.5, seed=1, commit=commit2,
              finished="2026-11-28T09:00:00+0000")
    write_run(runs, "vit-mini-conv", common, "done", 98.6, seed=0)
    write_run(runs, "vit-mini-conv", common, "diverged", epoch=3, seed=1,
              reason="non-finite loss")
    write_run(runs, "vit-mini-conv-nobn", common, "failed", epoch=2, seed=0,
              reason="RuntimeError: boom")
    write_run(runs, "vit-mini-conv-nobn", common, "running", epoch=4, seed=1)


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with SRV_UPDATE_GOLDEN=1 once"
    assert text == path.read_text(), f"{name} changed; diff it against {path} (update with " \
        "SRV_UPDATE_GOLDEN=1 after review)"


def test_gather_one_row_per_cell_and_seed(tmp_path: Path, tables_env: Path) -> None:
    grid = _grid(tmp_path, STEM_GRID, "stemtest")
    stem_runs(tmp_path / "runs")
    df = gather(grid, tmp_path / "runs")
    assert len(df) == 6
    assert list(df["status"]) == ["done", "done", "done", "diverged", "failed", "partial"]
    assert list(df["axis:stem"]) == ["patch", "patch", "conv", "conv", "conv-nobn", "conv-nobn"]
    assert df.loc[3, "epoch"] == 3 and df.loc[4, "reason"] == "RuntimeError: boom"


def test_stem_table_golden_markdown_and_latex(tmp_path: Path, tables_env: Path) -> None:
    grid = _grid(tmp_path, STEM_GRID, "stemtest")
    stem_runs(tmp_path / "runs")
    table = build_table(grid, gather(grid, tmp_path / "runs"), flops=False)
    md, tex = render_markdown(table), render_latex(table)
    # mean ± sample std (ddof=1) over the finished seeds, n, and a diverged seed shown and
    # counted at chance-level top-1 (10 classes), as srv claims counts it
    assert "| patchify" in md and " **68.8** ± 1.8 |   2 |" in md
    assert "54.3 ± 62.6; div@e3 |   2 |" in md
    assert "partial e4/15; 1 failed |   0 |" in md
    assert "76.8" in md and "79.1" in md  # 100 - published error
    assert "wang2022.csv yet" in md
    _golden("table_stem.md", md)
    _golden("table_stem.tex", tex)
    check_latex(tex, columns=10)


def test_two_dimensional_table_golden(tmp_path: Path, tables_env: Path) -> None:
    (tables_env / "reference" / "wang2022.csv").write_text(
        WANG_HEADER + "vit-s-patch,,,AdamW,5e-4,5,300,79.8,,,,Wang (test row),\n")
    grid = _grid(tmp_path, WARMUP_GRID, "warmuptest")
    runs = tmp_path / "runs"
    for model, warmup, status, top1 in (("vit-mini-patch", 0.0, "diverged", None),
                                        ("vit-mini-patch", 5.0, "done", 69.7),
                                        ("vit-mini-conv", 0.0, "done", 95.1),
                                        ("vit-mini-conv", 5.0, "done", 98.6)):
        write_run(runs, model, {"epochs": 15, "img_size": 16, "warmup_epochs": warmup}, status,
                  top1, epoch=2 if status == "diverged" else None)
    table = build_table(grid, gather(grid, runs), flops=False)
    md, tex = render_markdown(table), render_latex(table)
    assert "| warmup epochs: 0 |" in md.replace("  ", " ") or "warmup epochs: 0" in md
    assert "div@e2" in md and "**98.6**" in md
    assert "patch (Wang et al.)" in md and "79.8" in md  # published row, matched on warmup 5
    assert r"\multicolumn{2}{c}{warmup epochs}" in tex and r"\cmidrule(lr){2-3}" in tex
    _golden("table_warmup.md", md)
    _golden("table_warmup.tex", tex)
    check_latex(tex, columns=3)


def check_latex(tex: str, columns: int) -> None:
    """Structure of a booktabs table: balanced environments and braces, escaped text, every
    row with the tabular's number of columns, ASCII only; compiled when pdflatex exists."""
    tex.encode("ascii")
    body = [line for line in tex.splitlines() if not line.startswith("%")]
    text = "\n".join(body)
    for env in ("table", "tabular"):
        assert text.count(rf"\begin{{{env}}}") == text.count(rf"\end{{{env}}}") == 1
    assert text.index(r"\toprule") < text.index(r"\midrule") < text.index(r"\bottomrule")
    assert re.search(r"\\caption\{.+\}", text) and re.search(r"\\label\{tab:.+\}", text)
    depth = 0
    for ch in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    spec = re.search(r"\\begin\{tabular\}\{([lrc]+)\}", text).group(1)
    assert len(spec) == columns
    rows = text.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    for row in rows:
        assert row.endswith(r"\\")
        assert len(re.findall(r"(?<!\\)&", row)) == columns - 1, row
    for raw in ("_", "%", "#", "&"):  # in text, always escaped
        for line in body:
            if line.startswith((r"\begin", r"\caption", r"\parbox")):
                assert not re.search(rf"(?<!\\){re.escape(raw)}", line.replace(r"\\", "")) \
                    or raw == "&", (raw, line)
    if shutil.which("pdflatex"):  # pragma: no cover - not installed on the CI image
        compile_latex(tex)


def compile_latex(tex: str) -> None:  # pragma: no cover
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        doc = ("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + tex
               + "\\end{document}\n")
        Path(d, "t.tex").write_text(doc)
        out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=d,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout[-2000:]


def test_latex_escape() -> None:
    assert latex_escape("a_b 5% & #1 {x} ~ ^ \\ ± —") == (
        r"a\_b 5\% \& \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} "
        r"$\pm$ ---")


def test_mixed_code_versions_are_refused_unless_forced(tmp_path: Path,
                                                       tables_env: Path) -> None:
    grid = _grid(tmp_path, STEM_GRID, "stemtest")
    stem_runs(tmp_path / "runs", commit2="fff0000aaa")
    df = gather(grid, tmp_path / "runs")
    with pytest.raises(SrvError, match=r"2 git commits: abc1234 \(3 runs\), fff0000 \(1 runs\)"):
        build_table(grid, df, flops=False)
    table = build_table(grid, df, flops=False, force=True)
    assert "mixed git commits (--force)" in table.provenance


def test_mixed_recipes_are_refused(tmp_path: Path, tables_env: Path) -> None:
    grid = _grid(tmp_path, STEM_GRID, "stemtest")
    stem_runs(tmp_path / "runs")
    df = gather(grid, tmp_path / "runs")
    df.loc[0, "recipe"] = "deit"
    with pytest.raises(SrvError, match="2 recipes"):
        build_table(grid, df, flops=False)


def test_flops_columns_count_the_trained_architecture(tmp_path: Path, tables_env: Path) -> None:
    grid = _grid(tmp_path, STEM_GRID, "stemtest", axes={"stem": ["patch", "conv"]})
    stem_runs(tmp_path / "runs")
    table = build_table(grid, gather(grid, tmp_path / "runs"))
    i = table.header.index("Params (M)")
    assert table.header[i:i + 2] == ["Params (M)", "GFLOPs"]
    from reproduce.models.flops import count

    want = count("vit-mini-conv", 16, num_classes=10)
    assert table.rows[1][i].mean == pytest.approx(want.params_m)
    assert table.rows[1][i + 1].mean == pytest.approx(want.gflops)
    assert any("1 fused multiply-add = 1 FLOP" in n for n in table.notes)


def test_edf_table_and_plot(tmp_path: Path, tables_env: Path) -> None:
    grid = load_grid("lr-wd-edf", samples=4, overrides={"img_size": 16})
    runs = tmp_path / "runs"
    for cell, status, top1 in zip(grid.cells(), ["done", "done", "diverged", "done",
                                                 "done", "done", "done", "failed"],
                                  [80, 90, None, 60, 95, 97, 96, None], strict=True):
        write_run(runs, cell.model, cell.override_dict, status, top1, epoch=2)
    rep = make_report(grid, grid_records(grid, runs), tables_env, formats=("markdown", "latex"))
    md = rep.texts["markdown"]
    assert rep.table.kind == "edf"
    patch = rep.table.rows[0]
    assert [e.text for e in patch[1:5]] == ["4", "3", "1", "0"]
    # errors 20, 10, 40 and a diverged run as 100: best 10, median 30
    assert patch[5].mean == 10.0 and patch[7].mean == 30.0
    assert [e.text for e in rep.table.rows[1][1:5]] == ["4", "3", "0", "1"]
    png = tables_env / "lr-wd-edf-edf.png"
    assert png in rep.paths and png.read_bytes()[:4] == b"\x89PNG"
    assert "![EDF](lr-wd-edf-edf.png)" in md
    check_latex(rep.texts["latex"], columns=8)


def test_srv_table_cli_writes_and_prints(tmp_path: Path, tables_env: Path) -> None:
    grid_path = tmp_path / "stemtest.toml"
    grid_path.write_text(STEM_GRID)
    stem_runs(tmp_path / "runs")
    args = ["table", str(grid_path), "--runs-dir", str(tmp_path / "runs"), "--no-flops"]
    result = runner.invoke(app, [*args, "--latex"])
    assert result.exit_code == 0, result.output
    assert r"\begin{tabular}" in result.output and "| patchify" not in result.output
    assert (tables_env / "stemtest.tex").exists() and not (tables_env / "stemtest.md").exists()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = (tables_env / "stemtest.md").read_text()
    assert "| patchify" in result.output and text.startswith("## Stem ablation (test)")
    assert (tables_env / "stemtest.png").read_bytes()[:4] == b"\x89PNG"
    assert "![training curves](stemtest.png)" in text
    # no results: one line, exit 2
    empty = runner.invoke(app, ["table", str(grid_path), "--runs-dir", str(tmp_path / "none")])
    assert empty.exit_code == 2 and "no finished runs" in empty.stderr


def test_table_finds_every_seed_that_was_run(tmp_path: Path, tables_env: Path) -> None:
    grid_path = tmp_path / "stemtest.toml"
    grid_path.write_text(STEM_GRID)
    stem_runs(tmp_path / "runs")
    write_run(tmp_path / "runs", "vit-mini-patch", {"epochs": 15, "img_size": 16}, "done", 71.0,
              seed=7)
    result = runner.invoke(app, ["table", str(grid_path), "--runs-dir", str(tmp_path / "runs"),
                                 "--no-flops", "--no-write"])
    assert result.exit_code == 0, result.output
    assert "seeds 0, 1, 7" in result.output
    assert re.search(r"\| patchify +\| +\*\*69\.5\*\* ± 1\.8 \| +3 \|", result.output)
    # conv: 98.6 and a diverged seed at chance (10 classes), as srv claims counts it; seed 7
    # never ran for conv
    assert "54.3 ± 62.6; div@e3; 1 pending" in result.output


def test_reference_csvs_are_tables_too(tables_env: Path) -> None:
    result = runner.invoke(app, ["table", "reference/pub", "--no-write", "--latex"])
    assert result.exit_code == 0, result.output
    assert "vitp-4gf" in result.output and r"\toprule" in result.output
    result = runner.invoke(app, ["table", "reference/nope", "--no-write"])
    assert result.exit_code == 2 and "no reference table" in result.stderr


def test_reference_matching_rules() -> None:
    import pandas as pd

    from reproduce.report.reference_columns import _canon, _Reference

    assert _canon("vit-s-conv", "conv-nobn") == _canon("vit-s-conv-nobn", float("nan"))
    assert _canon("vitc-4gf", "3s2c48,1s1;norm=ln") == ("vitc-4gf", "3s2c48,1s1;norm=ln")
    frame = pd.DataFrame([
        {"model": "vit-s-conv", "stem": "conv-nobn", "optimizer": "AdamW", "lr": 5e-4,
         "epochs": 300, "top1": None, "top1_err": 21.5, "source": "x"},
        {"model": "vit-s-conv", "stem": "", "optimizer": "SGD", "lr": None, "epochs": 300,
         "top1": 78.0, "top1_err": None, "source": "x"},
    ])
    auto = _Reference("w", "W", None, None, {}, frame)  # matched on the cell's own config
    cell = {"model": "vit-s-conv-nobn", "stem": "", "opt": "adamw", "lr": 5e-4, "epochs": 300}
    assert auto.lookup(None, {}, cell) == 78.5 and auto.converted
    assert auto.lookup(None, {}, {**cell, "lr": 1e-3}) is None  # another lr: not this number
    by_row = _Reference("w", "W", None, {"sgd-row": {"model": "vit-s-conv"}},
                        {"opt": "optimizer"}, frame)
    assert by_row.lookup("sgd-row", {"opt": "sgd"}, {}) == 78.0
    assert by_row.lookup("sgd-row", {"opt": "adamw"}, {}) is None
    assert by_row.lookup("other", {"opt": "sgd"}, {}) is None


def test_seeds_only_other_grids_ran_do_not_count(tmp_path: Path, tables_env: Path) -> None:
    """The lr-wd-edf draws train at one seed; the lr grid's runs of the same models and recipe at
    other seeds are not draws of this grid, so the table does not add those seeds as missing."""
    grid = load_grid("lr-wd-edf", samples=2, overrides={"img_size": 16})
    runs = tmp_path / "runs"
    for cell, top1 in zip(grid.cells(), [80, 90, 95, 97], strict=True):
        write_run(runs, cell.model, cell.override_dict, "done", top1, epoch=2)
    other = {"img_size": 16, "lr": 0.002}  # another grid's cell: same models, recipe, seed 5
    write_run(runs, "vit-mini-patch", other, "done", 40.0, seed=5)
    assert grid_seeds(grid, runs) == grid.seeds
    write_run(runs, grid.cells()[0].model, grid.cells()[0].override_dict, "done", 81.0, seed=5)
    assert grid_seeds(grid, runs) == sorted({*grid.seeds, 5})  # a draw run at seed 5 counts

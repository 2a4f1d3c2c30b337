"""scripts/cpu_bench.py (issue 28 (2)): the ratio arithmetic on hand-written timings, and one
tiny end-to-end run (a baseline cell and two cells at once on tiny IDX files)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_fashion import write_idx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import cpu_bench  # noqa: E402
from cpu_bench import Cell, eval_every_ratio, ratios  # noqa: E402


def _cell(variant: str, wall: float, train: float, seed: int = 0, ok: bool = True) -> Cell:
    return Cell("m", variant, seed, ok, wall, startup_s=10.0, epoch_train_s=train,
                epoch_eval_s=4.0, img_per_s=100.0, train_images=1000)


def test_ratios_are_speed_ups_over_fp32_in_the_same_run() -> None:
    cells = [_cell("fp32", 100.0, 20.0), _cell("bf16", 50.0, 8.0),
             _cell("jobs2", 120.0, 22.0), _cell("jobs2", 110.0, 24.0, seed=1),
             _cell("compile", 0.0, 0.0, ok=False)]
    rows = {r["variant"]: r for r in ratios(cells)}
    assert rows["fp32"]["cell"] == 1.0 and rows["fp32"]["cells_per_hour"] == 1.0
    assert rows["bf16"]["cell"] == 2.0 and rows["bf16"]["train"] == 2.5
    # two cells per 120 s against one per 100 s; the concurrent epochs are 15% slower
    assert rows["jobs2"]["cell"] is None
    assert rows["jobs2"]["cells_per_hour"] == pytest.approx(2 * 100 / 120)
    assert rows["jobs2"]["train"] == pytest.approx(20 / 23)
    assert rows["compile"]["ok"] is False and rows["compile"]["cell"] is None


def test_evaluating_every_k_epochs_is_modelled_from_the_baseline_parts() -> None:
    base = _cell("fp32", 100.0, 20.0)  # 10 s start-up, 100 img/s, 4 s per evaluation
    # 5 epochs of 1,000 images: 10 + 50 + 5 x 4 = 80 s; every 2: 3 evaluations -> 72 s
    assert eval_every_ratio(base, 2, 5, 1000) == pytest.approx(80 / 72)
    assert eval_every_ratio(base, 5, 5, 1000) == pytest.approx(80 / 64)
    assert eval_every_ratio(base, 1, 5, 1000) == 1.0
    assert eval_every_ratio(_cell("fp32", 1, 1, ok=False), 2, 5, 1000) is None


def test_a_tiny_benchmark_runs_real_cells(tmp_path: Path) -> None:
    data = write_idx(tmp_path / "fmnist")
    out = tmp_path / "bench" / "cpu.json"
    rc = cpu_bench.main(["--out", str(out), "--models", "vit-mini-patch", "--variants",
                         "jobs2", "--epochs", "1", "--train-subset", "0", "--data", str(data),
                         "--set", "img_size=16", "--set", "batch_size=40",
                         "--eval-every", "2"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert [c["variant"] for c in report["cells"]] == ["fp32", "jobs2", "jobs2"]
    assert [c["seed"] for c in report["cells"]] == [900, 900, 901]
    assert all(c["ok"] and c["epoch_train_s"] > 0 and c["train_images"] == 120
               for c in report["cells"])
    rows = {r["variant"]: r for r in report["ratios"]}
    assert rows["fp32"]["cell"] == 1.0 and rows["jobs2"]["cells_per_hour"] > 0
    (every,) = report["eval_every"]
    assert every["k"] == 2 and every["cell_epochs"] == 5 and every["modelled"]
    assert every["cell_train_images"] == 20_000 and every["ratio"] > 1.0
    assert "fp32 eager" in report["baseline"] and "CPUs of" in report["environment"]

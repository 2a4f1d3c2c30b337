"""The benchmark command runs end to end (tiny CPU sizes; it measures, it is not timed here)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from reproduce.cli import app

runner = CliRunner()


def test_bench_reports_ratios_to_the_baseline(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--models", "vit-mini-patch,vit-mini-conv",
                                 "--modes", "eager", "--img-size", "32", "--batch", "4",
                                 "--steps", "2", "--warmup", "1", "--amp", "off",
                                 "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    rows = data["results"]
    assert [r["model"] for r in rows] == ["vit-mini-patch", "vit-mini-conv"]
    assert rows[0]["ratio"] == 1.0 and rows[1]["ratio"] > 0 and rows[1]["img_per_s"] > 0
    assert "torch" in data["environment"]


def test_bench_rejects_unknown_names() -> None:
    result = runner.invoke(app, ["bench", "--models", "vit-mini-pach", "--device", "cpu"])
    assert result.exit_code == 2 and "did you mean vit-mini-patch" in result.stderr
    result = runner.invoke(app, ["bench", "--modes", "jit", "--device", "cpu"])
    assert result.exit_code == 2 and "unknown mode 'jit'" in result.stderr

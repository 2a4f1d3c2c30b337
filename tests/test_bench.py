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
    from reproduce.training.runs import cpu_model

    assert "torch" in data["environment"] and f"CPU threads of {cpu_model()}" in data["environment"]


def test_bench_rejects_unknown_names() -> None:
    result = runner.invoke(app, ["bench", "--models", "vit-mini-pach", "--device", "cpu"])
    assert result.exit_code == 2 and "did you mean vit-mini-patch" in result.stderr
    result = runner.invoke(app, ["bench", "--modes", "jit", "--device", "cpu"])
    assert result.exit_code == 2 and "unknown mode 'jit'" in result.stderr
    # impossible numbers are refused before anything is built or written
    for option, value in (("--workers", "-1"), ("--steps", "0"), ("--batch", "0"),
                          ("--make-jpegs", "0")):
        result = runner.invoke(app, ["bench", option, value, "--device", "cpu"])
        assert result.exit_code == 2 and option in result.output, (option, result.output)


def test_bench_measures_the_engine_on_device_batches_and_on_jpegs(tmp_path: Path) -> None:
    """The engine (DeiT recipe: Mixup, EMA, statistics) on synthetic device batches and on a
    JPEG folder through timm's loader with workers, each as a ratio to the bare step."""
    from reproduce.data.jpeg_folder import JpegFolderSpec, write_jpeg_folder

    folder = write_jpeg_folder(tmp_path / "jpegs", JpegFolderSpec(
        classes=4, train_per_class=8, val_per_class=2, sizes=((40, 30), (30, 40))))
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--models", "vit-mini-conv", "--modes", "eager",
                                 "--pipelines", "bare,engine,timm", "--jpeg-folder",
                                 str(folder), "--workers", "2", "--img-size", "16", "--batch",
                                 "8", "--steps", "2", "--warmup", "1", "--amp", "off",
                                 "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [r["model"] for r in data["bare"]] == ["vit-mini-conv"] and data["workers"] == 2
    engine = {e["pipeline"]: e for e in data["engine"]}
    assert set(engine) == {"engine", "timm"}
    assert engine["engine"]["steps"] == 2 and engine["timm"]["steps"] == 32 // 8
    for e in engine.values():
        assert e["img_per_s"] > 0 and 0 < e["ratio_to_bare"] and 0 <= e["data_wait_frac"] < 1
    result = runner.invoke(app, ["bench", "--pipelines", "bare,grpc", "--device", "cpu"])
    assert result.exit_code == 2 and "unknown pipeline 'grpc'" in result.stderr

"""The benchmark command runs end to end (tiny CPU sizes; it measures, it is not timed here)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.data.jpeg_folder import JpegFolderSpec, write_jpeg_folder

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


def test_the_engine_is_timed_in_steady_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pipeline that takes 0.6 s to hand out an epoch's first batch (as DALI's per-epoch
    build, or a prefetch queue filling): the start-up is reported apart, not in img/s."""
    from reproduce.training import bench

    def slow_start(self: bench.DeviceBatches) -> Any:
        time.sleep(0.6)
        for _ in range(self.steps):
            yield self.x, self.y

    monkeypatch.setattr(bench.DeviceBatches, "__iter__", slow_start)
    res = bench.bench_engine("vit-mini-patch", "eager", "engine", batch=4, img_size=16,
                             amp="off", steps=3, workers=1, device_name="cpu")
    assert res.steps == 3 and res.first_batch_s is not None and res.first_batch_s >= 0.6
    assert res.epoch_img_per_s is not None
    whole = 12 / res.epoch_img_per_s  # seconds for the timed epoch, its start included
    steady = 12 / res.img_per_s
    assert whole - steady == pytest.approx(res.first_batch_s, abs=0.05)
    assert steady < whole - 0.55 and res.data_wait_frac < 0.2


def test_the_bare_step_has_the_engines_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline takes the engine's device defaults (cuDNN autotuning, TF32) and, under
    fp16, scales its loss with a GradScaler as the engine does."""
    import torch

    from reproduce.training import bench, device

    configured: list[torch.device] = []
    monkeypatch.setattr(device, "configure_device", configured.append)
    steps: list[float] = []

    class Counting(torch.amp.GradScaler):
        def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
            steps.append(self.get_scale())
            return super().step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.amp, "GradScaler", Counting)
    cpu = torch.device("cpu")
    res = bench.bench_model("vit-mini-patch", "eager", 2, 16, "fp16", steps=2, warmup=1,
                            device=cpu)
    assert res.img_per_s > 0 and configured == [cpu]
    # warm-up + 2 timed steps, each through the scaler, from torch's initial scale (backed
    # off after an fp16 overflow)
    assert len(steps) == 3 and steps[0] == 65536.0 and all(s <= 65536.0 for s in steps)
    steps.clear()
    bench.bench_model("vit-mini-patch", "eager", 2, 16, "bf16", steps=2, warmup=1, device=cpu)
    assert steps == []  # bf16 does not scale (as the engine)


def test_bench_times_the_dali_pipeline(tmp_path: Path) -> None:
    """The DALI pipeline (its CPU operators) runs in the benchmark, its per-epoch start-up
    (pipeline build, decoder start) reported apart from the steady state."""
    pytest.importorskip("nvidia.dali")
    from reproduce.training.bench import bench_engine

    folder = write_jpeg_folder(tmp_path / "jpegs", JpegFolderSpec(
        classes=4, train_per_class=8, val_per_class=2, sizes=((40, 30), (30, 40))))
    res = bench_engine("vit-mini-conv", "eager", "dali", batch=8, img_size=16, amp="off",
                       steps=2, jpeg_folder=folder, workers=1, device_name="cpu")
    assert res.steps == 32 // 8 and res.img_per_s > 0 and 0 <= res.data_wait_frac < 1
    assert res.first_batch_s is not None and res.first_batch_s > 0
    assert res.epoch_img_per_s is not None and res.epoch_img_per_s < res.img_per_s


def test_bench_times_the_engine_with_and_without_tracking(tmp_path: Path) -> None:
    """--log: each engine pipeline twice, without and with the trackers (the cost of logging)."""
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--models", "vit-mini-conv", "--modes", "eager",
                                 "--pipelines", "engine", "--log", "tensorboard",
                                 "--img-size", "16", "--batch", "8", "--steps", "3",
                                 "--warmup", "1", "--amp", "off", "--device", "cpu",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    engine = {e["pipeline"]: e for e in json.loads(out.read_text())["engine"]}
    assert set(engine) == {"engine", "engine+tensorboard"}
    assert all(e["steps"] == 3 and e["img_per_s"] > 0 and e["error"] is None
               for e in engine.values())
    # the trackers' calls timed directly: some time, a small share of the step time
    assert engine["engine"]["tracking_frac"] is None
    assert 0 < engine["engine+tensorboard"]["tracking_frac"] < 0.5
    bad = runner.invoke(app, ["bench", "--pipelines", "engine", "--log", "tensorbord"])
    assert bad.exit_code == 2 and "recipe key 'log'" in bad.stderr

"""The prepared GPU check (scripts/gpu_check.py) works end to end in its --cpu smoke mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


@pytest.mark.slow
def test_gpu_check_cpu_smoke_passes_every_step(tmp_path: Path,
                                               subprocess_env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--cpu",
                           "--out", str(tmp_path)], env=subprocess_env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu-check-cpu-smoke.json").read_text())
    assert report["failed"] == []
    steps = report["steps"]
    assert [r["epoch"] for r in steps["train_bf16"]["epochs"]] == [1, 2]
    kill = steps["kill_and_resume"]
    assert kill["killed_after_epoch"] == 1 and kill["resumed_from_epoch"] == 1
    assert kill["top1_difference"] == 0 and kill["train_loss_difference"] == 0  # bitwise
    pipelines = {e["pipeline"] for e in steps["bench"]["results"]["engine"]}
    assert pipelines == {"engine", "timm"}
    assert (tmp_path / "gpu-check-cpu-smoke-bench.json").exists()

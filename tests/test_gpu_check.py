"""The prepared GPU check (scripts/gpu_check.py): its --cpu smoke mode passes every step, and an
interpreter that lacks what it needs is told so in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SCRIPT = REPO / "scripts" / "gpu_check.py"


def test_a_python_without_torch_is_told_what_is_missing_in_one_line(tmp_path: Path) -> None:
    """The interpreter under this virtual environment has none of its packages."""
    base = getattr(sys, "_base_executable", sys.executable)
    probe = subprocess.run([base, "-s", "-c", "import importlib.util as u; "
                            "print(u.find_spec('torch') is None)"], capture_output=True,
                           text=True, env={"PATH": os.environ.get("PATH", "")}, check=False)
    if probe.stdout.strip() != "True":
        pytest.skip("the base interpreter has torch: no interpreter without it here")
    done = subprocess.run([base, "-s", str(SCRIPT), "--cpu", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO)})
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: missing modules torch"), lines
    assert not list(tmp_path.iterdir())  # nothing started


@pytest.mark.slow
def test_gpu_check_cpu_smoke_passes_every_step(tmp_path: Path,
                                               subprocess_env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu", "--out", str(tmp_path)],
                          env=subprocess_env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "gpu-check-cpu-smoke.json").read_text())
    assert report["failed"] == [], report["failed"]
    steps = report["steps"]
    for name in ("jpegs", "bench_eager", "engine_timm", "train_bf16", "kill_and_resume",
                 "train_fp16", "bench_compile"):
        assert steps[name]["status"] == "ok", (name, steps[name])
        assert f"[{name}] ok: " in done.stdout  # each step's headline, as it ends
    assert steps["engine_dali"]["status"] in ("ok", "skipped")
    for name in ("bench_eager", "bench_compile"):
        assert steps[name]["ratio"] > 0 and steps[name]["engine"]["mode"] == name[6:]
    assert [r["epoch"] for r in steps["train_bf16"]["epochs"]] == [1, 2]
    assert steps["train_fp16"]["epochs"][-1]["loss_scale"] > 0
    kill = steps["kill_and_resume"]
    assert kill["resumed_from_epoch"] == 1 and kill["weights_equal"]
    assert all(d == 0 for diffs in kill["differences"].values() for d in diffs)  # bitwise

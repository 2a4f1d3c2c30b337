"""The GPU check of the engine (issue 18's "Done when"), for a session that has a GPU.

Under ten minutes on one GPU (``nox -s gpu`` or ``python scripts/gpu_check.py``):

1. writes a folder of synthetic ImageNet-like JPEGs (``reproduce.data.jpeg_folder``);
2. trains 2 epochs under bf16 and under fp16 (``srv train``, timm's loader on the folder);
3. reruns the fp16 run in a second directory, SIGKILLs it mid-way through epoch 2 and reruns
   the same command: it must resume and complete, and its metrics are compared with the
   uninterrupted run's (bitwise on the CPU; within noise on a GPU without --deterministic);
4. runs ``srv bench``'s end-to-end pipelines (bare step, engine, timm loader, DALI if present);
5. writes every figure to ``tables/benchmarks/gpu-check-<card>.json`` (and the bench's own JSON
   next to it), ``<card>`` being the GPU's name (``cpu-smoke`` with ``--cpu``).

``--cpu`` runs the same steps with tiny sizes on the CPU, so the script is known to work before
a GPU session spends its time on it (``tests/test_gpu_check.py``). Exit code 0 when every step
passed; the JSON says which failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SRV = [sys.executable, "-m", "reproduce"]


def _sizes(cpu: bool) -> dict[str, Any]:
    if cpu:
        return dict(model="vit-mini-conv", recipe="mini", classes=4, train=64, val=4,
                    jpeg=((64, 48), (48, 64)), batch=16, img=32, workers=1,
                    bench=["--models", "vit-mini-conv", "--modes", "eager", "--batch", "8",
                           "--img-size", "32", "--steps", "2", "--warmup", "1", "--device",
                           "cpu", "--workers", "1", "--pipelines", "bare,engine,timm"])
    return dict(model="vit-s-conv", recipe="deit", classes=10, train=400, val=50, jpeg=None,
                batch=256, img=224, workers=min(os.cpu_count() or 1, 14),
                bench=["--models", "vit-s-conv", "--modes", "eager", "--batch", "256",
                       "--steps", "30", "--warmup", "10", "--pipelines",
                       "bare,engine,timm" + (",dali" if _has_dali() else "")])


def _has_dali() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def _card(cpu: bool) -> str:
    if cpu:
        return "cpu-smoke"
    import torch

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no-gpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _train_cmd(s: dict[str, Any], data: Path, runs: Path, amp: str, cpu: bool) -> list[str]:
    sets = dict(dataset="imagefolder", data_path=str(data), epochs=2, warmup_epochs=1.0,
                batch_size=s["batch"], img_size=s["img"], amp=amp, num_workers=s["workers"],
                device="cpu" if cpu else "cuda")
    cmd = [*SRV, "train", s["model"], "--recipe", s["recipe"], "--runs-dir", str(runs),
           "--no-progress"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    t0 = time.monotonic()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return {"rc": done.returncode, "seconds": round(time.monotonic() - t0, 1),
            "tail": (done.stdout + done.stderr)[-1500:]}


def _result(runs: Path) -> dict[str, Any]:
    (run,) = [p for p in runs.iterdir() if p.is_dir() and ".old-" not in p.name]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    result = json.loads((run / "result.json").read_text())
    env = json.loads((run / "env.json").read_text())
    keep = ("epoch", "train_loss", "val_top1", "img_per_s", "data_wait_frac", "skipped_steps",
            "loss_scale")
    return {"top1": result["top1"], "resumed_from_epoch": env.get("resumed_from_epoch"),
            "epochs": [{k: r.get(k) for k in keep} for r in rows]}


def _kill_mid_epoch_2(cmd: list[str], runs: Path, env: dict[str, str], timeout: float,
                      delay: float) -> dict[str, Any]:
    """Start ``cmd``, SIGKILL it once epoch 1 is checkpointed (so mid-way through epoch 2)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    killed_at = None
    while proc.poll() is None and time.monotonic() < deadline:
        status = next(runs.glob("*/status.json"), None)
        if status is not None:
            try:
                epoch = json.loads(status.read_text()).get("epoch", 0)
            except (OSError, ValueError):
                epoch = 0
            if epoch >= 1:
                time.sleep(delay)  # into epoch 2
                os.killpg(proc.pid, signal.SIGKILL)
                killed_at = epoch
                break
        time.sleep(0.05)
    proc.wait()
    return {"killed_after_epoch": killed_at, "rc": proc.returncode}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="tiny CPU smoke run of every step")
    parser.add_argument("--out", type=Path, default=REPO / "tables" / "benchmarks")
    parser.add_argument("--timeout", type=float, default=540.0, help="seconds per step")
    args = parser.parse_args(argv)
    s = _sizes(args.cpu)
    card = _card(args.cpu)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if args.cpu:
        env["OMP_NUM_THREADS"] = "1"
    report: dict[str, Any] = {"card": card, "cpu_smoke": args.cpu, "sizes": {
        k: v for k, v in s.items() if k != "bench"}, "steps": {}, "failed": []}
    steps = report["steps"]
    t_all = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sys.path.insert(0, str(REPO))
        from reproduce.data.jpeg_folder import JpegFolderSpec, write_jpeg_folder

        t0 = time.monotonic()
        spec = JpegFolderSpec(classes=s["classes"], train_per_class=s["train"],
                              val_per_class=s["val"], **({"sizes": s["jpeg"]} if s["jpeg"]
                                                         else {}))
        data = write_jpeg_folder(tmp / "jpegs", spec, processes=max(s["workers"], 1))
        steps["jpegs"] = {"images": s["classes"] * (s["train"] + s["val"]),
                          "seconds": round(time.monotonic() - t0, 1)}
        for amp in ("bf16", "fp16"):
            runs = tmp / f"runs-{amp}"
            steps[f"train_{amp}"] = out = _run(_train_cmd(s, data, runs, amp, args.cpu), env,
                                               args.timeout)
            if out["rc"] == 0:
                out.update(_result(runs))
            else:
                report["failed"].append(f"train_{amp}")
        runs = tmp / "runs-killed"
        cmd = _train_cmd(s, data, runs, "fp16", args.cpu)
        kill = _kill_mid_epoch_2(cmd, runs, env, args.timeout, 0.0 if args.cpu else 0.5)
        rerun = _run(cmd, env, args.timeout)
        kill.update(rerun=rerun)
        steps["kill_and_resume"] = kill
        if rerun["rc"] == 0 and kill["killed_after_epoch"] and steps["train_fp16"]["rc"] == 0:
            kill.update(_result(runs))
            whole = steps["train_fp16"]
            kill["top1_difference"] = kill["top1"] - whole["top1"]
            kill["train_loss_difference"] = (kill["epochs"][-1]["train_loss"]
                                             - whole["epochs"][-1]["train_loss"])
            if args.cpu and kill["top1_difference"] != 0:  # bitwise on the CPU
                report["failed"].append("kill_and_resume (not bitwise on the CPU)")
            if kill.get("resumed_from_epoch") != 1:
                report["failed"].append("kill_and_resume (did not resume from epoch 1)")
        else:
            report["failed"].append("kill_and_resume")
        bench_json = args.out / f"gpu-check-{card}-bench.json"
        args.out.mkdir(parents=True, exist_ok=True)
        steps["bench"] = _run([*SRV, "bench", *s["bench"], "--jpeg-folder", str(data), "--amp",
                               "bf16", "--out", str(bench_json)], env, args.timeout)
        if steps["bench"]["rc"] != 0:
            report["failed"].append("bench")
        else:
            steps["bench"]["results"] = json.loads(bench_json.read_text())
    report["seconds"] = round(time.monotonic() - t_all, 1)
    path = args.out / f"gpu-check-{card}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"written": str(path), "failed": report["failed"],
                      "seconds": report["seconds"]}))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

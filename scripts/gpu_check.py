"""The GPU check: the engine's figures on one GPU, step by step, in under 6 minutes on an H100.

Runs from a checkout with no install and no network (``PYTHONPATH=. python scripts/gpu_check.py
--out DIR``, or ``nox -s gpu -- --out DIR``) on Python >= 3.11 with torch >= 2.6, timm,
torchvision, numpy, Pillow and typer importable (DALI optional); it checks those first and names
what is missing in one line (exit 2). Each step runs in a child process of its own with
``--timeout`` seconds, prints its headline figure, and the JSON ``DIR/gpu-check-<card>.json``
is rewritten after every step, so a run cut short still returns what it measured:

* ``jpegs``: a folder of synthetic ImageNet-like JPEGs (``reproduce.data.jpeg_folder``);
* ``bench_eager``: the engine (DeiT recipe, synthetic batches already on the device) against
  the bare model step, eager;
* ``engine_timm`` / ``engine_dali``: the engine fed by timm's loader / by DALI from the folder,
  against the bare step (DALI's epoch start, its training pipeline built again, is
  ``first_batch_s``); a missing or failing DALI does not stop the other steps;
* ``train_bf16``: 2 epochs under bf16 with ``deterministic = true`` (``srv train``'s engine,
  timm's loader, no tracker);
* ``kill_and_resume``: the same run SIGKILLed mid-way through epoch 2 and run again: it resumes
  from epoch 1 and must end equal to ``train_bf16``, every epoch's losses and the weights;
* ``train_fp16``: 2 epochs under fp16 (loss scaler, autotuned kernels);
* ``bench_compile``: engine against bare step under ``torch.compile`` (last: the slowest).

``--cpu`` runs every step with tiny sizes on the CPU (compiling with the ``aot_eager`` backend),
so the script is known to work before a GPU session spends its time on it
(``tests/test_gpu_check.py``). Exit 0 when no step failed (a step without DALI is skipped).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NEEDED = ("torch", "torchvision", "timm", "numpy", "PIL", "typer")  # what the engine imports
STEPS = ("jpegs", "bench_eager", "engine_timm", "engine_dali", "train_bf16", "kill_and_resume",
         "train_fp16", "bench_compile")
NEEDS = {"engine_timm": ("jpegs",), "engine_dali": ("jpegs",), "train_bf16": ("jpegs",),
         "kill_and_resume": ("jpegs", "train_bf16"), "train_fp16": ("jpegs",)}

GPU = dict(model="vit-s-conv", img=224, batch=256, steps=30, warmup=10, classes=10,
           train_per_class=800, val_per_class=50, jpeg=None, train_subset=2560, device="cuda",
           workers=min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                       else (os.cpu_count() or 1), 14))
CPU = dict(model="vit-mini-conv", img=32, batch=16, steps=3, warmup=1, classes=4,
           train_per_class=24, val_per_class=4, jpeg=[[64, 48], [48, 64]], train_subset=64,
           device="cpu", workers=1)


# --- the parent: checks, steps, the report ------------------------------------------------------


def missing_imports() -> str | None:
    """None when the check can run, else one line saying what is missing."""
    if sys.version_info < (3, 11):  # noqa: UP036 - said in one line, not a traceback
        return f"gpu_check: Python {sys.version.split()[0]} is too old: srv needs 3.11 or newer"
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        return (f"gpu_check: missing module{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)}: install {'them' if len(missing) > 1 else 'it'} (srv "
                f"itself needs no install: PYTHONPATH={REPO})")
    import torch

    if tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2]) < (2, 6):
        return f"gpu_check: torch {torch.__version__} is too old: srv needs torch 2.6 or newer"
    sys.path.insert(0, str(REPO))
    try:
        for module in ("reproduce.training.engine", "reproduce.training.bench",
                       "reproduce.data.jpeg_folder"):
            importlib.import_module(module)
    except ModuleNotFoundError as err:
        return f"gpu_check: missing module {err.name} (imported by {module}): install it"
    return None


def _has_dali() -> bool:
    return importlib.util.find_spec("nvidia") is not None and \
        importlib.util.find_spec("nvidia.dali") is not None


def _card(cpu: bool) -> str:
    """The GPU's name for the file name, from nvidia-smi (no CUDA context in this process)."""
    if cpu:
        return "cpu-smoke"
    name = "gpu"
    if shutil.which("nvidia-smi"):
        done = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                              capture_output=True, text=True, check=False)
        name = (done.stdout.splitlines() or ["gpu"])[0]
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def _environment(cpu: bool) -> dict[str, Any]:
    import timm
    import torch

    return {"python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": torch.version.cuda, "timm": timm.__version__, "dali": _has_dali(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "cpu_smoke": cpu}


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_child(step: str, args: dict[str, Any], env: dict[str, str], timeout: float
              ) -> dict[str, Any]:
    """``step`` in a child process (its own session: a timeout kills its loader workers too);
    returns its result, with ``rc``, ``seconds`` and the output's tail."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        result_path = Path(f.name)
    cmd = [sys.executable, __file__, "--child", step, "--args", json.dumps(args),
           "--result", str(result_path)]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, _ = proc.communicate()
        timed_out = True
    except BaseException:  # interrupted or terminated: take the step's processes along
        _kill_group(proc.pid)
        result_path.unlink(missing_ok=True)
        raise
    _kill_group(proc.pid)  # loader workers left behind by a killed child
    record: dict[str, Any] = {}
    if result_path.stat().st_size:
        record = json.loads(result_path.read_text())
    result_path.unlink(missing_ok=True)
    record.update(rc=proc.returncode, timed_out=timed_out,
                  seconds=round(time.monotonic() - t0, 1), tail=(out or "")[-1500:])
    return record


def _ratio(step: dict[str, Any]) -> str:
    e, b = step["engine"], step["bare"]
    epoch_s = e["steps"] * e["batch"] / e["epoch_img_per_s"] if e["epoch_img_per_s"] else 0.0
    return (f"engine {e['img_per_s']:,.0f} img/s = {step['ratio']:.3f}x the bare step "
            f"({b['img_per_s']:,.0f} img/s), data wait {100 * e['data_wait_frac']:.0f}%, "
            f"epoch start {e['first_batch_s']:.2f} s of a {epoch_s:.2f} s epoch")


def _losses(step: dict[str, Any]) -> str:
    rows = step["epochs"]
    text = " -> ".join(f"{r['train_loss']:.4f}" if r["train_loss"] is not None else "n/a"
                       for r in rows)
    extra = f", loss scale {rows[-1]['loss_scale']:g}" if rows[-1].get("loss_scale") else ""
    return (f"train loss {text}, val loss {rows[-1]['val_loss']:.4f}, "
            f"{rows[-1]['img_per_s']:,.0f} img/s{extra}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="tiny CPU smoke run of every step")
    parser.add_argument("--out", type=Path, default=REPO / "tables" / "benchmarks",
                        help="folder for gpu-check-<card>.json (default tables/benchmarks)")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per step")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help=f"comma list of steps to run, with the steps they need "
                             f"(default all: {','.join(STEPS)})")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--args", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # the parent has checked the imports
        return child(args.child, json.loads(args.args), args.result)
    if (line := missing_imports()) is not None:
        print(line, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminated)  # a kill ends the running step's child too
    wanted = {s.strip() for s in args.steps.split(",") if s.strip()}
    if bad := sorted(wanted - set(STEPS)):
        parser.error(f"unknown step {bad[0]!r}: use any of {', '.join(STEPS)}")
    wanted |= {need for step in wanted for need in NEEDS.get(step, ())}
    return run_steps(args.cpu, args.out, args.timeout, [s for s in STEPS if s in wanted])


def run_steps(cpu: bool, out_dir: Path, timeout: float, wanted: list[str]) -> int:
    """Every wanted step in order, the JSON rewritten after each; 1 when one failed."""
    s = dict(CPU if cpu else GPU)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"gpu-check-{_card(cpu)}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if cpu:
        env.setdefault("OMP_NUM_THREADS", "1")
    report: dict[str, Any] = {"card": path.stem.removeprefix("gpu-check-"),
                              "environment": _environment(cpu), "sizes": s, "steps": {},
                              "failed": [], "skipped": [], "seconds": 0.0}
    steps: dict[str, dict[str, Any]] = report["steps"]
    t_all = time.monotonic()
    print(f"gpu_check: {', '.join(wanted)} -> {path}", flush=True)

    def save() -> None:
        report["seconds"] = round(time.monotonic() - t_all, 1)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(path)

    save()  # the environment, before any step

    def done(name: str, record: dict[str, Any], ok: bool, headline: str) -> None:
        record["status"] = "ok" if ok else "failed"
        record["headline"] = headline
        steps[name] = record
        if not ok:
            report["failed"].append(name)
        save()
        print(f"[{name}] {record['status']}: {headline} ({record['seconds']:.0f} s)", flush=True)

    def failure(record: dict[str, Any]) -> str:
        if record.get("timed_out"):
            return f"timed out after {timeout:.0f} s"
        return record.get("error") or (record["tail"].strip().splitlines() or ["no output"])[-1]

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "jpegs"
        runs = {"bf16": tmp / "runs-bf16", "killed": tmp / "runs-killed", "fp16": tmp / "runs-fp16"}
        base = dict(s, data=str(data), cpu=cpu)
        for name in wanted:
            if name == "jpegs":
                r = run_child("jpegs", base, env, timeout)
                ok = r["rc"] == 0 and "images" in r
                done(name, r, ok, f"{r['images']:,} images written" if ok else failure(r))
            elif name.startswith("bench_"):
                r = run_child("bench", dict(base, mode=name.removeprefix("bench_")), env, timeout)
                ok = r["rc"] == 0 and "ratio" in r
                done(name, r, ok, _ratio(r) if ok else failure(r))
            elif name.startswith("engine_"):
                pipeline = name.removeprefix("engine_")
                if pipeline == "dali" and not _has_dali():
                    steps[name] = {"status": "skipped", "headline": "nvidia.dali not installed",
                                   "seconds": 0.0}
                    report["skipped"].append(name)
                    save()
                    print(f"[{name}] skipped: nvidia.dali not installed", flush=True)
                    continue
                r = run_child("pipeline", dict(base, pipeline=pipeline), env, timeout)
                ok = r["rc"] == 0 and "ratio" in r
                done(name, r, ok, _ratio(r) if ok else failure(r))
            elif name in ("train_bf16", "train_fp16"):
                amp = name.removeprefix("train_")
                r = run_child("train", dict(base, amp=amp, deterministic=amp == "bf16",
                                            runs=str(runs[amp])), env, timeout)
                ok = r["rc"] == 0 and r.get("status") == "completed"
                done(name, r, ok, _losses(r) if ok else failure(r))
            elif name == "kill_and_resume":
                done(name, *_kill_and_resume(base, runs, steps.get("train_bf16"), env, timeout,
                                             failure))
    save()
    print(json.dumps({"written": str(path), "failed": report["failed"],
                      "skipped": report["skipped"], "seconds": report["seconds"]}), flush=True)
    return 1 if report["failed"] else 0


def _kill_and_resume(base: dict[str, Any], runs: dict[str, Path], whole: dict[str, Any] | None,
                     env: dict[str, str], timeout: float, failure: Any
                     ) -> tuple[dict[str, Any], bool, str]:
    """The deterministic bf16 run SIGKILLed mid-way through epoch 2, then run again: equal to
    the uninterrupted ``train_bf16`` to the last loss and the last weight."""
    per_epoch = base["train_subset"] // base["batch"]
    at = per_epoch + per_epoch // 2  # the step (0-based, whole run) that never finishes
    args = dict(base, amp="bf16", deterministic=True, runs=str(runs["killed"]))
    killed = run_child("train", dict(args, kill_at_step=at), env, timeout)
    if killed["rc"] != -signal.SIGKILL:
        return killed, False, f"the run was not killed mid-epoch: {failure(killed)}"
    resumed = run_child("train", args, env, timeout)
    record = dict(resumed, killed_at_step=at, killed_seconds=killed["seconds"],
                  seconds=round(killed["seconds"] + resumed["seconds"], 1))
    if resumed["rc"] != 0 or resumed.get("status") != "completed":
        return record, False, failure(resumed)
    if resumed.get("resumed_from_epoch") != 1:
        return record, False, f"resumed from epoch {resumed.get('resumed_from_epoch')}, not 1"
    if whole is None or whole.get("status") != "ok":
        return record, False, "resumed, but no uninterrupted train_bf16 run to compare with"
    keys = ("train_loss", "val_loss", "val_top1")
    diffs = {k: [b[k] - a[k] if a[k] is not None and b[k] is not None else None
                 for a, b in zip(whole["epochs"], resumed["epochs"], strict=True)] for k in keys}
    record["differences"] = diffs
    record["weights_equal"] = resumed["weights_sha"] == whole["weights_sha"]
    equal = record["weights_equal"] and all(d == 0 for v in diffs.values() for d in v)
    last = resumed["epochs"][-1]["train_loss"]
    headline = (f"killed at step {at + 1} (epoch 2), resumed from epoch 1: last train loss "
                f"{last:.6f} vs {whole['epochs'][-1]['train_loss']:.6f} uninterrupted, "
                f"weights {'equal' if record['weights_equal'] else 'differ'}")
    return record, equal, headline if equal else f"NOT EQUAL: {headline}"


# --- the children: one step each ----------------------------------------------------------------


def child(step: str, a: dict[str, Any], result: Path) -> int:
    """Run one step in this (child) process and write its result as JSON to ``result``."""
    sys.path.insert(0, str(REPO))
    if a.get("cpu"):
        _compile_cheaply()
    try:
        out = {"jpegs": _child_jpegs, "bench": _child_bench, "pipeline": _child_pipeline,
               "train": _child_train}[step](a)
    except Exception as err:  # noqa: BLE001 - the parent reports it as the step's failure
        import traceback

        traceback.print_exc()
        result.write_text(json.dumps({"error": f"{type(err).__name__}: {err}"[:500]}))
        return 1
    result.write_text(json.dumps(out))
    return 0


def _compile_cheaply() -> None:
    """--cpu: torch.compile with the aot_eager backend (dynamo and AOT autograd, no C++
    compile on a shared CPU)."""
    import torch

    from reproduce.training import device, engine

    def compile_model(net: Any, **options: Any) -> Any:
        torch._dynamo.reset()
        return torch.compile(net, backend="aot_eager", **options)

    device.compile_model = compile_model  # type: ignore[assignment]
    engine.compile_model = compile_model  # type: ignore[assignment]


def _child_jpegs(a: dict[str, Any]) -> dict[str, Any]:
    from reproduce.data.jpeg_folder import JpegFolderSpec, write_jpeg_folder

    sizes = {"sizes": tuple(tuple(x) for x in a["jpeg"])} if a["jpeg"] else {}
    spec = JpegFolderSpec(classes=a["classes"], train_per_class=a["train_per_class"],
                          val_per_class=a["val_per_class"], **sizes)
    write_jpeg_folder(Path(a["data"]), spec, processes=max(a["workers"], 1))
    return {"images": a["classes"] * (a["train_per_class"] + a["val_per_class"])}


def _bare_and_engine(a: dict[str, Any], mode: str, pipeline: str) -> dict[str, Any]:
    from dataclasses import asdict

    import torch

    from reproduce.training.bench import bench_engine, bench_model

    device = torch.device(a["device"])
    bare = bench_model(a["model"], mode, a["batch"], a["img"], "bf16", a["steps"], a["warmup"],
                       device)
    engine = bench_engine(a["model"], mode, pipeline, a["batch"], a["img"], "bf16", a["steps"],
                          a["data"] if pipeline != "engine" else None, a["workers"],
                          a["device"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "mode": mode, "pipeline": pipeline, "bare": asdict(bare),
            "engine": asdict(engine), "ratio": engine.img_per_s / bare.img_per_s}


def _child_bench(a: dict[str, Any]) -> dict[str, Any]:
    return _bare_and_engine(a, a["mode"], "engine")


def _child_pipeline(a: dict[str, Any]) -> dict[str, Any]:
    return _bare_and_engine(a, "eager", a["pipeline"])


def _child_train(a: dict[str, Any]) -> dict[str, Any]:
    """2 epochs of the DeiT recipe on the folder (timm's loader, no tracker); with
    ``kill_at_step`` this process SIGKILLs itself when that step starts."""
    import hashlib

    import torch

    from reproduce.training.config import resolve_config
    from reproduce.training.engine import train
    from reproduce.training.loop import EpochLoop

    if "kill_at_step" in a:
        real = EpochLoop._measure_update  # asked once per step, before the step runs

        def measure_update(self: EpochLoop) -> bool:
            if self.step == a["kill_at_step"]:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self)

        EpochLoop._measure_update = measure_update  # type: ignore[method-assign]
    cfg = resolve_config(a["model"], "deit", dict(
        dataset="imagefolder", data_path=a["data"], epochs=2, warmup_epochs=1.0,
        batch_size=a["batch"], img_size=a["img"], amp=a["amp"], num_workers=a["workers"],
        device=a["device"], deterministic=a["deterministic"], train_subset=a["train_subset"],
        log="none"))
    out = train(cfg, a["runs"], progress=False)
    run = out.run_dir
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    keep = ("epoch", "train_loss", "val_loss", "val_top1", "img_per_s", "data_wait_frac",
            "skipped_steps", "loss_scale")
    sha = hashlib.sha256()
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)["model"]
    for key in sorted(state):
        sha.update(key.encode())
        sha.update(state[key].detach().contiguous().reshape(-1).view(torch.uint8).numpy())
    env = json.loads((run / "env.json").read_text())
    return {"status": out.status, "reason": out.reason,
            "device": (env.get("gpus") or [env.get("device")])[0],
            "resumed_from_epoch": env.get("resumed_from_epoch"),
            "epochs": [{k: r.get(k) for k in keep} for r in rows], "weights_sha": sha.hexdigest()}


if __name__ == "__main__":
    sys.exit(main())

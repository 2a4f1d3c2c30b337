"""The GPU researcher's path, as far as a CPU can walk it: a full-scale grid's dry run shows the
data check, the submission (torchrun commands, SLURM parameters) and the cost; torchrun over two
"nodes" (gloo, one machine) trains a cell; srv flops answers from its cache; help texts and
srv models hold at 80 columns."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, TINY
from typer.testing import CliRunner

from reproduce.cli import app

runner = CliRunner()


def invoke(args: list[str], **env: str):  # noqa: ANN201
    return runner.invoke(app, args, env=env or None)


# --- a full-scale grid before launch ---------------------------------------------------------


def test_a_full_grid_without_data_stops_at_the_dry_run(tmp_path: Path) -> None:
    result = invoke(["ablate", "warmup", "--preset", "full", "--backend", "slurm", "--dry-run",
                     "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("srv: error: 8 of 8 cells of grid 'warmup' (full) cannot run")
    assert "--data PATH" in line
    assert "sbatch" not in result.stdout  # nothing about a launch that cannot happen


def test_a_full_grid_dry_run_shows_the_slurm_submission_and_the_cost(
        tmp_path: Path, imagenet_layout: Path) -> None:
    from reproduce.recipes.grids import load_grid
    from reproduce.training.builders import steps_per_epoch

    runs = tmp_path / "runs"
    result = invoke(["ablate", "warmup", "--preset", "full", "--data", str(imagenet_layout),
                     "--backend", "slurm", "--nnodes", "2", "--nproc", "4", "--slurm-partition",
                     "gpu", "--slurm-time", "600", "--dry-run", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "job array of 8 tasks" in out and "2 node(s) x 4 GPU(s) (world size 8)" in out
    params = re.search(r"sbatch parameters: (.*)", out).group(1)
    for item in ("nodes=2", "tasks_per_node=4", "gpus_per_node=4", "cpus_per_task=10",
                 "timeout_min=600", "slurm_partition=gpu", "slurm_array_parallelism=16"):
        assert item in params.split(", "), item
    assert f"{runs.resolve()}/.submitit/warmup/<job id>/" in out
    # the cost: the engine's updates x global batch x epochs, at srv bench's H100 figure
    from reproduce.training.config import resolve_config

    grid = load_grid("warmup", "full", overrides={"data_path": str(imagenet_layout)})
    cell = grid.cells()[0]
    cfg = resolve_config(cell.model, cell.recipe, {**cell.override_dict, "seed": 0})
    spe, _ = steps_per_epoch(cfg.recipe, 8)
    images = spe * cfg.recipe.batch_size * cfg.recipe.epochs
    bench = json.loads((REPO / "tables/benchmarks/h100-bench_eager.json").read_text())
    rate = {x["model"]: x["img_per_s"] for x in bench["results"]}["vit-s-patch"]
    assert f"vit-s-patch x 4: {4 * images:,} training images; " \
                  f"{4 * images / rate / 3600:,.1f} GPU-hours at {rate:,.0f} img/s" in out
    assert "h100-bench_eager.json: NVIDIA H100" in out
    assert "1 seed per cell: srv claims can give no verdict" in out
    stated = invoke(["ablate", "warmup", "--preset", "full", "--data", str(imagenet_layout),
                     "--dry-run", "--img-per-s", "1000", "--runs-dir", str(runs)])
    assert f"cost: 8 cells to train, {8 * images:,} training images" in stated.stdout
    assert f"GPU-hours: {8 * images / 1000 / 3600:,.1f}; wall-clock about " in stated.stdout
    assert "at 1,000 img/s per GPU, stated (--img-per-s)" in stated.stdout
    assert not runs.exists()  # a dry run writes nothing


def test_a_paired_draw_grids_dry_run_does_not_ask_for_seeds(tmp_path: Path) -> None:
    """lr-wd-edf pairs the stems by (lr, wd) draw: one seed is its design, not a missing test."""
    result = invoke(["ablate", "lr-wd-edf", "--preset", "quick", "--dry-run", "--runs-dir",
                     str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    assert "1 seed x 16 (lr, wd) draws per stem: srv claims pairs the stems' errors by draw" \
        in result.stdout
    assert "can give no verdict" not in result.stdout


def test_multi_node_torchrun_dry_run_prints_each_cells_command(
        tmp_path: Path, imagenet_layout: Path) -> None:
    runs = tmp_path / "runs"
    args = ["ablate", "warmup", "--preset", "full", "--data", str(imagenet_layout), "--axis",
            "warmup=0", "--backend", "torchrun", "--nproc", "8", "--nnodes", "2", "--dry-run",
            "--runs-dir", str(runs)]
    missing = invoke(args)
    assert missing.exit_code == 2 and "needs --rdzv-endpoint HOST:PORT" in missing.stderr
    result = invoke([*args, "--node-rank", "1", "--rdzv-endpoint", "node001:29500"])
    assert result.exit_code == 0, result.output
    commands = [line.strip() for line in result.stdout.splitlines()
                if "torch.distributed.run" in line]
    assert len(commands) == 2  # two stems at warmup 0
    for cmd in commands:
        for arg in ("--nnodes=2", "--node_rank=1", "--rdzv_backend=c10d",
                    "--rdzv_endpoint=node001:29500", "--nproc_per_node=8", "-m reproduce train",
                    f"--set data_path={imagenet_layout}", f"--runs-dir {runs}"):
            assert arg in cmd, arg
        assert "--standalone" not in cmd and re.search(r"--rdzv_id=vit-s-\w+-[0-9a-f]{12}", cmd)


def test_only_rank_0_prints_a_dry_run(tmp_path: Path, imagenet_layout: Path) -> None:
    data = ["--data", str(imagenet_layout)]
    for args in (["train", "vit-s-conv", "--dry-run", *data],
                 ["ablate", "warmup", "--preset", "full", "--dry-run", *data, "--runs-dir",
                  str(tmp_path / "runs")]):
        lead = invoke(args, RANK="0")
        other = invoke(args, RANK="1")
        assert lead.exit_code == other.exit_code == 0, other.output
        assert "cost:" in lead.stdout and other.stdout == ""
    refused = invoke(["train", "vit-s-conv", "--dry-run"], RANK="1")  # every rank checks
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1


def test_train_dry_run_prints_the_cost(imagenet_layout: Path) -> None:
    result = invoke(["train", "vit-s-conv", "--data", str(imagenet_layout), "--dry-run",
                     "--img-per-s", "2000", "--epochs", "10"])
    assert result.exit_code == 0, result.output
    spe = int(re.search(r"(\d+) updates per epoch", result.stdout).group(1))
    images = spe * 1024 * 10
    assert (f"cost: {images:,} training images; {images / 2000 / 3600:,.1f} GPU-hours at "
            f"2,000 img/s per GPU, stated (--img-per-s)") in result.stdout


# --- two torchrun "nodes" on one machine ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_two_node_torchrun_cell_trains(tmp_path: Path) -> None:
    """Two srv ablate processes, node ranks 0 and 1, one c10d endpoint on localhost: each
    launches a torchrun of one process per "node" and the two form one gloo group (world
    size 2); node 0 holds the lock, node 1 follows without one, and the cell finishes once."""
    settings = {**TINY, "epochs": 1, "warmup_epochs": 0.0, "dataset": "synthetic",
                "train_subset": 128, "val_subset": 32}
    grid = tmp_path / "two.toml"
    grid.write_text('title = "two nodes"\n[table]\nrows = ["stem"]\n[axes.stem]\n'
                    'key = "model"\nformat = "vit-mini-{value}"\nvalues = ["patch"]\n'
                    '[presets.mini]\nrecipe = "mini"\nseeds = [0]\nset = { '
                    + ", ".join(f"{k} = {v!r}" for k, v in settings.items()) + " }\n")
    runs = tmp_path / "runs"
    endpoint = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RANK", None)
    procs = [subprocess.Popen(
        [sys.executable, "-m", "reproduce", "ablate", str(grid), "--runs-dir", str(runs),
         "--backend", "torchrun", "--nnodes", "2", "--node-rank", str(rank),
         "--rdzv-endpoint", endpoint, "--no-table"], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    (run_dir,) = [p.parent for p in runs.glob("*/result.json")]
    assert json.loads((run_dir / "config.json").read_text())["derived"]["world_size"] == 2
    log = (runs / ".logs" / f"{run_dir.name}.log").read_text()
    assert "--nnodes=2" in log and "--node_rank=1" in log and "--node_rank=0" in log


# --- srv flops: --set and the cache ----------------------------------------------------------


def test_flops_set_and_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reproduce.models import flops as fl

    monkeypatch.setenv("SRV_CACHE_DIR", str(tmp_path / "cache"))
    narrow = invoke(["flops", "vit-mini-conv", "--set", "stem_width=16", "--format", "json"])
    assert narrow.exit_code == 0, narrow.output
    default = fl.count("vit-mini-conv")
    (rec,) = json.loads(narrow.stdout)
    assert rec["params"] < default.params and rec["stem_params"] < default.stem_params
    assert list((tmp_path / "cache" / "complexity").glob("*.json"))

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached count built a model")

    import reproduce.models as models

    monkeypatch.setattr(models, "create", no_build)
    assert fl.count("vit-mini-conv") == default  # from the cache, equal in every field
    again = invoke(["flops", "vit-mini-conv", "--set", "stem_width=16", "--format", "json"])
    assert json.loads(again.stdout) == [rec]
    monkeypatch.setattr(fl, "models_code_version", lambda: "another-version")
    with pytest.raises(AssertionError, match="built a model"):  # new code: a miss
        fl.count("vit-mini-conv")
    bad = invoke(["flops", "vit-mini-conv", "--set", "depth=3"])
    assert bad.exit_code == 2 and "srv flops takes stem, stem_width, patch_size" in bad.stderr


# --- help texts -------------------------------------------------------------------------------


def test_help_texts_say_what_is_true() -> None:
    ablate = invoke(["ablate", "--help"], COLUMNS="200").stdout
    assert re.search(r"mini .*quick .*full", ablate)
    for flag in ("--data", "--dataset", "--batch-size", "--nnodes", "--rdzv-endpoint",
                 "--img-per-s"):
        assert flag in ablate, flag
    assert "<runs-dir>/tables" in invoke(["claims", "--help"], COLUMNS="200").stdout
    top = invoke(["--help"], COLUMNS="200").stdout
    rows = [line for line in top.splitlines() if re.match(r"│ [a-z]+ {2,}", line)]
    names = {line.split()[1] for line in rows}  # one line per command: no summary broken
    assert names == {"ablate", "analyze", "bench", "claims", "eval", "export", "flops",
                     "models", "recipes", "runs", "table", "train"} and len(rows) == len(names)
    assert all(line.rstrip(" │").endswith(".") or line.rstrip(" │").endswith(")")
               for line in rows), rows


def test_srv_models_reads_at_80_columns() -> None:
    from reproduce.models import CATALOGUE

    out = invoke(["models"], COLUMNS="80").stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if line.split(" ")[0] in CATALOGUE]
    assert len(rows) == len(CATALOGUE)  # one line each
    assert "3s2c64,3s2c128,3s1c128,3s2c256,3s1c256,3s2c512,1s1" in out  # specs whole
    assert re.search(r"^vitc-36gf +ViT_C-36GF +1024 x 13 +224/16 +spec 3", out, re.M)

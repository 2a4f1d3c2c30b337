"""Gradient accumulation (``accum_steps``): the same run as the big batch, on fewer devices.

Tested on the patchify mini ViT (no BatchNorm, so micro-batches change nothing but the order of
floating-point sums), digits, dropout / drop path 0, no Mixup: 2 x 64 must follow the 128
batch's loss curve and end at the same weights, plain AdamW and SAM alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.training.config import resolve_config
from reproduce.training.engine import train

runner = CliRunner()

#: 2 updates per epoch of a global batch of 128, no randomness inside the model
SETTINGS = {"img_size": 16, "train_subset": 256, "val_subset": 101, "batch_size": 128,
            "epochs": 2, "warmup_epochs": 1.0, "drop_path": 0.0, "drop": 0.0, "mixup": 0.0,
            "cutmix": 0.0}


def _run(root: Path, accum: int, **extra: object) -> tuple[list[dict], dict]:
    cfg = resolve_config("vit-mini-patch", "mini", {**SETTINGS, "accum_steps": accum, **extra})
    outcome = train(cfg, root, progress=False)
    assert outcome.status == "completed"
    rows = [json.loads(line) for line in (outcome.run_dir / "metrics.jsonl").read_text()
            .splitlines()]
    return rows, torch.load(outcome.run_dir / "last.pt", weights_only=True)


@pytest.mark.parametrize("opt", ["adamw", "sam-adamw"])
def test_accumulation_follows_the_big_batch(tmp_path: Path, opt: str) -> None:
    big_rows, big = _run(tmp_path / "big", 1, opt=opt)
    acc_rows, acc = _run(tmp_path / "acc", 2, opt=opt)
    assert [r["step"] for r in acc_rows] == [r["step"] for r in big_rows] == [2, 4]
    for b, a in zip(big_rows, acc_rows, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-6)
        assert a["grad_norm_mean"] == pytest.approx(b["grad_norm_mean"], rel=1e-4)
        assert a["lr"] == b["lr"] and a["lr_end"] == b["lr_end"]  # schedule in updates
        assert a["val_top1"] == pytest.approx(b["val_top1"], abs=1.0)  # one image at most
    apart = max((big["model"][k] - acc["model"][k]).abs().max().item() for k in big["model"])
    assert apart < 1e-4
    # the optimizer took as many steps, and the run is the same run (accum is not hashed)
    assert acc["step"] == big["step"] == 4
    assert acc["config"]["hash"] == big["config"]["hash"]


def test_accumulation_in_the_dry_run_and_its_refusal(tmp_path: Path) -> None:
    args = ["train", "vit-mini-patch", "--dataset", "digits", "--runs-dir", str(tmp_path),
            "--batch-size", "128", "--dry-run"]
    result = runner.invoke(app, [*args, "--accum-steps", "4"])
    assert result.exit_code == 0, result.output
    derived = json.loads(result.stdout[result.stdout.index("{"):])["derived"]
    assert "memory per device (an estimate)" in result.stdout
    assert derived["memory_estimate_gib"]["micro_batch"] == 32
    assert (derived["global_batch"], derived["per_device_batch"], derived["accum_steps"],
            derived["micro_batch"]) == (128, 128, 4, 32)
    bad = runner.invoke(app, [*args, "--accum-steps", "3"])
    assert bad.exit_code == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "not divisible by accum_steps = 3" in lines[0]


def test_memory_estimate_counts_what_autograd_keeps() -> None:
    from torch import nn

    from reproduce.training.memory import activation_bytes_per_image, memory_estimate

    with torch.device("meta"):
        model = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.ReLU(), nn.Linear(8, 2))
    # per image: the first Linear's input (48 floats) and the ReLU's output (8 floats, which the
    # second Linear saves too: counted once); the weights cancel out
    assert activation_bytes_per_image(model, 4) == (48 + 8) * 4
    adam = torch.optim.AdamW(model.parameters())
    one, four = (memory_estimate(model, adam, m, 4, ema=True, sam=False) for m in (2**22, 2**20))
    n = 48 * 8 + 8 + 8 * 2 + 2
    assert one["optimizer"] == round(2 * 4 * n / 1024**3, 3) and one["ema"] == one["weights"]
    assert one["activations"] == pytest.approx(224 * 2**22 / 1024**3, abs=1e-3)
    assert four["activations"] == pytest.approx(one["activations"] / 4, abs=1e-3)


def test_ablate_accumulates_in_every_cell_and_refuses_a_bad_split(tmp_path: Path) -> None:
    from reproduce.commands.ablate import load_cli_grid
    from reproduce.experiments.cells import plan

    grid = load_cli_grid("stem", "quick", None, None, None, None, accum_steps=4)
    states = plan(grid, tmp_path)
    assert {s.cfg.recipe.accum_steps for s in states} == {4}
    plain = plan(load_cli_grid("stem", "quick", None, None, None, None), tmp_path)
    assert [s.cfg.run_name for s in states] == [s.cfg.run_name for s in plain]  # same runs
    args = ["ablate", "stem", "--preset", "quick", "--runs-dir", str(tmp_path), "--dry-run"]
    bad = runner.invoke(app, [*args, "--accum-steps", "3"])
    assert bad.exit_code == 2
    assert "not divisible by accum_steps = 3" in bad.stderr.strip().splitlines()[-1]
    assert not any(tmp_path.iterdir())  # nothing written

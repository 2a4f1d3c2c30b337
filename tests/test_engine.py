"""The training engine on tiny real runs: run files, resume, divergence, checkpoints, eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY, tiny_args
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.errors import ExitCode
from reproduce.training.config import resolve_config
from reproduce.training.engine import train
from reproduce.training.resume import load_checkpoint_model

runner = CliRunner()


def _cfg(model: str = "vit-mini-conv", **extra: object):
    return resolve_config(model, "mini", {**TINY, **extra})


def test_run_directory_holds_every_file(runs_root: Path) -> None:
    outcome = train(_cfg(), runs_root, progress=False)
    assert outcome.status == "completed" and outcome.exit_code == 0
    run = outcome.run_dir
    assert run.name == _cfg().run_name
    for name in ("config.json", "env.json", "status.json", "metrics.jsonl", "last.pt",
                 "best.pt", "result.json"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["derived"]["steps_per_epoch"] == 256 // 64
    assert config["derived"]["warmup_steps"] == 4
    assert json.loads((run / "status.json").read_text())["status"] == "completed"
    env = json.loads((run / "env.json").read_text())
    assert env["cpu"] and env["cpu"] != "unknown CPU"  # a figure names its CPU
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("lr", "train_loss", "grad_norm_mean", "grad_norm_max", "loss_spikes",
                "max_update_ratio", "val_top1", "val_top5", "img_per_s", "data_wait_frac"):
        assert key in rows[0], key
    assert rows[0]["n_val"] == 101
    result = json.loads((run / "result.json").read_text())
    assert result["top1"] == rows[-1]["val_top1"] and result["n_val"] == 101
    assert result["config_hash"] == _cfg().hash and result["params_m"] > 0.5
    # checkpoints hold tensors and plain types only
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["step"] == 8
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "rng", "config"}
    torch.load(run / "best.pt", weights_only=True)


def test_completed_run_is_not_retrained(runs_root: Path) -> None:
    first = train(_cfg(), runs_root, progress=False)
    mtime = (first.run_dir / "last.pt").stat().st_mtime_ns
    again = train(_cfg(), runs_root, progress=False)
    assert again.status == "completed" and again.result == first.result
    assert (first.run_dir / "last.pt").stat().st_mtime_ns == mtime


def test_changed_config_in_same_dir_is_refused(runs_root: Path) -> None:
    run_dir = runs_root / "mine"
    train(_cfg(), run_dir=run_dir, progress=False)
    result = runner.invoke(app, ["train", "vit-mini-conv", "--run-dir", str(run_dir),
                                 *tiny_args(seed=5)])
    assert result.exit_code == 2
    assert "another config" in result.stderr and "seed: 0 -> 5" in result.stderr
    assert (run_dir / "result.json").exists()  # nothing lost
    restarted = runner.invoke(app, ["train", "vit-mini-conv", "--run-dir", str(run_dir),
                                    "--restart", "--no-progress", *tiny_args(seed=5)])
    assert restarted.exit_code == 0, restarted.output
    assert list(runs_root.glob("mine.old-*/result.json"))  # the old run was moved aside


def test_divergence_is_a_result_and_keeps_the_last_good_checkpoint(runs_root: Path) -> None:
    # epoch 1 trains at warmup_lr; epoch 2 jumps to an absurd SGD lr and must blow up
    args = ["train", "vit-mini-patch", "--runs-dir", str(runs_root), "--no-progress",
            *tiny_args(opt="sgd", lr=1e6, lr_scaling="none", sched_step="epoch", epochs=3)]
    result = runner.invoke(app, args)
    assert result.exit_code == ExitCode.DIVERGED, result.output
    (run,) = runs_root.iterdir()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "diverged" and status["epoch"] == 2 and status["step"] >= 5
    assert "non-finite" in status["reason"]
    assert not (run / "result.json").exists()
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in ckpt["model"].values() if t.is_floating_point())
    # rerunning the command reports the same result instead of training again
    again = runner.invoke(app, args)
    assert again.exit_code == ExitCode.DIVERGED and "diverged" in again.output


def test_eval_reports_the_training_top1(runs_root: Path) -> None:
    outcome = train(_cfg(), runs_root, progress=False)
    result = runner.invoke(app, ["eval", str(outcome.run_dir), "--format", "json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["top1"] == outcome.result["top1"]
    assert record["n_images"] == 101 and record["weights"] == "last"
    best = json.loads(runner.invoke(app, ["eval", str(outcome.run_dir / "best.pt"), "--format",
                                          "json"]).stdout)
    assert best["top1"] == outcome.result["best_top1"]
    model, cfg, which = load_checkpoint_model(outcome.run_dir, "best")
    assert cfg["model"] == "vit-mini-conv" and which["weights"] == "best"


def test_ema_and_sam_and_bf16_run(runs_root: Path) -> None:
    outcome = train(_cfg(ema_decay=0.9, opt="sam-adamw", amp="bf16", epochs=1,
                         warmup_epochs=0.5), runs_root, progress=False)
    assert outcome.status == "completed"
    row = json.loads((outcome.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert "ema_top1" in row
    ckpt = torch.load(outcome.run_dir / "last.pt", weights_only=True)
    assert any("running_mean" in k for k in ckpt["ema"])  # EMA tracks the stem's BN buffers


@pytest.mark.parametrize("args, message", [
    (["vit-mini-cnov"], "unknown model 'vit-mini-cnov'; did you mean vit-mini-conv"),
    (["vit-mini-conv", "--batch-size", "4096"], "fewer than one global batch of 4096"),
    (["vit-mini-conv", "--dataset", "imagefolder", "--data", "/nonexistent"], "no data at"),
    (["vit-mini-conv", "--set", "lr=fast"], "lr must be a number"),
    (["vit-mini-conv", "--recipe", "nope"], "no recipe 'nope'"),
    (["vit-mini-conv", "--set", "stem=3s2,banana"], "stem layer 'banana'"),
])
def test_bad_input_is_one_line_and_exit_2(runs_root: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["train", *args, "--runs-dir", str(runs_root)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("srv: error: ")
    assert message in lines[0]


def test_a_one_epoch_try_works_first_time_and_says_what_it_did(
        runs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """srv train MODEL --epochs 1: the recipe's 5 warmup epochs are scaled down with a note;
    the bar moves with the host's step counter (not only at the statistics' read-back) and
    shows the lr the epoch line ends on; run again, it says it was not retrained."""
    from reproduce.utils.reporter import Reporter

    seen: list[tuple[int, str | None]] = []
    real = Reporter.step
    monkeypatch.setattr(Reporter, "step", lambda self, step, info=None: (
        seen.append((step, info)), real(self, step, info))[-1])
    args = ["train", "vit-mini-conv", "--epochs", "1", "--runs-dir", str(runs_root),
            "--set", "img_size=16", "--set", "train_subset=256", "--set", "val_subset=64",
            "--batch-size", "64"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "note: the recipe's 5 warmup epochs do not fit in 1 epoch: warmup scaled to 0.33" \
        in first.stdout
    assert "(1 epoch)" in first.stdout and "not retrained" not in first.stdout
    assert [step for step, info in seen if info is None] == [1, 2, 3, 4]  # every step
    (shown,) = [info for _, info in seen if info is not None]  # one read-back (sync_every 50)
    epoch_line = next(line for line in first.stdout.splitlines() if "val top-1" in line)
    assert shown.split("lr ")[1] == epoch_line.split("  lr ")[1].split()[0].split("->")[-1]
    again = runner.invoke(app, args)
    assert again.exit_code == 0
    assert "vit-mini-conv: already completed, not retrained (--restart to redo): top-1" \
        in again.stdout


def test_ctrl_c_is_interrupted_and_resumable(runs_root: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in the second epoch: one line saying how to resume, exit 130, status interrupted
    (srv runs shows it; a grid cell is partial); the same command then finishes the run."""
    from reproduce.experiments import inspect_run
    from reproduce.experiments.overview import collect_runs
    from reproduce.training.engine import Trainer

    real = Trainer.train_epoch

    def interrupted(self: Trainer):  # noqa: ANN202
        if self.epoch >= 1:
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    args = ["train", "vit-mini-conv", *tiny_args(), "--runs-dir", str(runs_root)]
    result = runner.invoke(app, args)
    assert result.exit_code == 130, result.output
    assert result.stdout.rstrip().endswith("interrupted: rerun the same command to resume")
    (run,) = runs_root.iterdir()
    assert json.loads((run / "status.json").read_text())["status"] == "interrupted"
    assert [r.status for r in collect_runs(runs_root)] == ["interrupted"]
    assert inspect_run(run)[0] == "partial"
    monkeypatch.setattr(Trainer, "train_epoch", real)
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "resuming vit-mini-conv" in again.stdout

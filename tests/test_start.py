"""``srv train --resume PATH`` and ``--initial-checkpoint PATH`` on tiny digits runs (timm's
meanings): continue a run (in place, or under a longer schedule as a new run), start a new run
from a checkpoint's weights, and one-line refusals for the paths and checkpoints that cannot."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import TINY, tiny_args, train_until_killed
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.training.config import resolve_config
from reproduce.training.engine import train
from reproduce.training.resume import fit_state, initial_config
from reproduce.training.schedule import LrSchedule

runner = CliRunner()
MODEL = "vit-mini-conv"  # TINY: 4 updates an epoch, 2 epochs


def _rows(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _srv(*args: str) -> Any:
    return runner.invoke(app, ["train", *args])


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch run."""
    outcome = train(resolve_config(MODEL, "mini", TINY), tmp_path_factory.mktemp("runs"),
                    progress=False)
    assert outcome.status == "completed"
    return outcome.run_dir


def test_resume_with_more_epochs_continues_on_the_new_total(source: Path, tmp_path: Path) -> None:
    args = [MODEL, "--resume", str(source), "--epochs", "3", "--runs-dir", str(tmp_path)]
    result = _srv(*args)
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 3 and config["lr"] == TINY.get("lr", config["lr"])
    assert config["start"]["kind"] == "resume" and config["start"]["epoch"] == 2
    assert config["start"]["path"] == str((source / "last.pt").resolve())
    rows, before = _rows(run_dir), _rows(source)
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[:2] == before
    assert json.loads((run_dir / "result.json").read_text())["steps"] == 12
    # epoch 3 runs on the 3-epoch schedule, not on an extension of the 2-epoch one
    cfg3 = resolve_config(MODEL, "mini", {**TINY, "epochs": 3})
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg3.derived().lr)
    assert rows[2]["lr"] == pytest.approx(LrSchedule(opt, cfg3.recipe, 4).lr_at(3), rel=1e-9)
    assert rows[2]["lr"] != pytest.approx(rows[1]["lr_end"])  # the cosine was rebuilt
    # the same command again finds the finished run; the source run is untouched
    again = _srv(*args)
    assert again.exit_code == 0 and len(list(tmp_path.iterdir())) == 1
    assert len(_rows(source)) == 2


def test_resume_continues_an_interrupted_run_in_its_folder(source: Path, tmp_path: Path) -> None:
    cfg = resolve_config(MODEL, "mini", TINY)
    run_dir = train_until_killed(cfg, tmp_path)
    moved = tmp_path / "elsewhere"  # a folder moved by hand: --resume finds it anyway
    shutil.move(run_dir, moved)
    result = _srv(MODEL, "--resume", str(moved / "last.pt"), "--runs-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere"]  # no new run
    done = json.loads((moved / "result.json").read_text())
    # on the CPU the resumed run ends where the uninterrupted one did
    assert done["top1"] == json.loads((source / "result.json").read_text())["top1"]
    assert _rows(moved)[-1]["train_loss"] == _rows(source)[-1]["train_loss"]


def test_initial_checkpoint_starts_from_the_weights(source: Path, tmp_path: Path) -> None:
    frozen = ["--set", "lr=0", "--set", "warmup_lr=0", "--set", "min_lr=0"]
    result = _srv(MODEL, *tiny_args(epochs=1), *frozen, "--initial-checkpoint", str(source),
                  "--runs-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["start"]["kind"] == "initial" and len(config["start"]["sha256"]) == 64
    old = torch.load(source / "last.pt", weights_only=True)
    new = torch.load(run_dir / "last.pt", weights_only=True)
    # lr 0: the weights are exactly the checkpoint's; a fresh optimizer counted 4 steps
    assert all(torch.equal(old["model"][k], new["model"][k]) for k in old["model"]
               if "running" not in k and "num_batches" not in k)
    assert new["step"] == 4 and new["epoch"] == 1


def test_the_initial_checkpoint_is_part_of_the_identity(source: Path, tmp_path: Path) -> None:
    cfg = resolve_config(MODEL, "mini", TINY)
    copy = tmp_path / "copy.pt"
    shutil.copy(source / "last.pt", copy)
    best = initial_config(cfg, source / "best.pt")
    last, moved = initial_config(cfg, source), initial_config(cfg, copy)
    assert len({cfg.hash, best.hash, last.hash}) == 3  # another file, another run
    assert moved.hash == last.hash  # the same content elsewhere is the same run


def test_fit_state_reinitialises_only_the_head() -> None:
    small = resolve_config(MODEL, "mini", TINY)
    from reproduce.training.builders import build_model

    state = build_model(small, 10).state_dict()
    fitted, notes = fit_state(build_model(small, 12), state, "x.pt")
    assert "head.weight" not in fitted and "re-initialised" in notes[0]
    bigger = resolve_config(MODEL, "mini", {**TINY, "img_size": 32})
    with pytest.raises(Exception, match="pos_embed"):
        fit_state(build_model(bigger, 10), state, "x.pt")


@pytest.mark.parametrize("args, message", [
    (["--resume", "{src}", "--set", "lr=0.01"], "changes lr: 0.001 -> 0.01: only --epochs"),
    (["--resume", "{src}"], "has trained 2 epochs, all of a 2-epoch schedule"),
    (["--resume", "{src}/best.pt", "--epochs", "3"], "holds weights only"),
    (["--resume", "{src}/nope"], "no such file or folder"),
    (["--resume", "{src}/metrics.jsonl"], "not a readable srv checkpoint"),
    (["--resume", "{src}", "--initial-checkpoint", "{src}"], "give only one of them"),
    (["--resume", "{src}", "--recipe", "deit"], "drop --recipe"),
    (["--initial-checkpoint", "{src}", "--set", "img_size=32"], "weights do not fit"),
])
def test_bad_starts_are_one_line_and_exit_2(source: Path, tmp_path: Path, args: list[str],
                                           message: str) -> None:
    argv = [a.replace("{src}", str(source)) for a in args]
    result = _srv(MODEL, *argv, "--runs-dir", str(tmp_path), "--dry-run")
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("srv: error: ") and message in lines[0]

"""Every command that reads a checkpoint turns a file that is not one, or a truncated one, into
one line ``srv: error: ...`` and exit code 2."""

from __future__ import annotations

from pathlib import Path

import conftest
import pytest
import torch
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.training.builders import build_model
from reproduce.training.config import resolve_config
from reproduce.training.runs import atomic_torch_save

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real srv checkpoint (untrained vit-mini-patch on digits) and broken variants of it."""
    root = tmp_path_factory.mktemp("ckpt")
    cfg = resolve_config("vit-mini-patch", "mini", {**conftest.TINY})
    torch.manual_seed(0)
    model = build_model(cfg, 10)
    good = root / "good.pt"
    atomic_torch_save({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 0}, good)
    data = good.read_bytes()
    out = {"good": good}
    for name, content in (("truncated", data[: len(data) // 2]),
                          ("cut_at_end", data[:-100]),
                          ("empty", b""),
                          ("text", b"epoch 1 loss 2.3\n")):
        out[name] = root / f"{name}.pt"
        out[name].write_bytes(content)
    out["timm_style"] = root / "timm_style.pt"
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, out["timm_style"])
    out["mismatch"] = root / "mismatch.pt"  # conv-stem config, patchify weights
    other = resolve_config("vit-mini-conv", "mini", {**conftest.TINY})
    torch.save({"model": model.state_dict(), "config": other.to_dict()}, out["mismatch"])
    return out


def _one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("srv: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("name, message", [
    ("truncated", "may be truncated"),
    ("cut_at_end", "may be truncated"),
    ("empty", "not a readable srv checkpoint"),
    ("text", "not a readable srv checkpoint"),
    ("timm_style", "not an srv checkpoint"),
    ("mismatch", "do not fit the model its config describes"),
])
def test_eval_of_a_bad_checkpoint_is_one_line_exit_2(files: dict[str, Path], name: str,
                                                     message: str) -> None:
    line = _one_line_error(["eval", str(files[name]), "--device", "cpu"])
    assert str(files[name]) in line and message in line, line


@pytest.mark.parametrize("name", ["truncated", "timm_style"])
def test_analyze_of_a_bad_checkpoint_is_one_line_exit_2(files: dict[str, Path], name: str,
                                                        tmp_path: Path) -> None:
    line = _one_line_error(["analyze", "diversity", str(files[name]), "--runs-dir",
                            str(tmp_path / "runs"), "--no-write"])
    assert str(files[name]) in line


def test_a_run_directory_with_a_truncated_checkpoint(files: dict[str, Path],
                                                     tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(files["truncated"].read_bytes())
    line = _one_line_error(["eval", str(run), "--weights", "best", "--device", "cpu"])
    assert "best.pt" in line and "may be truncated" in line


def test_the_good_checkpoint_evaluates(files: dict[str, Path]) -> None:
    result = runner.invoke(app, ["eval", str(files["good"]), "--device", "cpu", "--format",
                                 "json"])
    assert result.exit_code == 0, result.output
    assert '"n_images": 101' in result.stdout

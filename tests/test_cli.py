"""The command line's own behaviour: option errors are one ``srv: error:`` line with exit code 2,
help texts flow as paragraphs (no hard break inside a sentence) and flags show no type."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from reproduce.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("args", "said"), [
    (["ablate", "stem", "--jobs", "0"], "srv ablate: invalid value for '--jobs'"),
    (["train", "vit-mini-conv", "--no-such-flag"], "srv train: no such option: --no-such-flag"),
    (["claims", "--data", "/x"], "srv claims: no such option: --data"),
    (["no-such-command"], "srv: no such command 'no-such-command'"),
    (["analyze", "diversity", "--bogus"], "srv analyze diversity: no such option: --bogus"),
])
def test_an_option_error_is_one_line_and_exit_2(args: list[str], said: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"srv: error: {said}") and line.endswith("--help)"), line
    assert result.stdout == ""


def test_help_paragraphs_have_no_hard_breaks_and_flags_no_type() -> None:
    out = runner.invoke(app, ["runs", "--help"], env={"COLUMNS": "200"}).stdout
    # the docstring's second paragraph spans two source lines: one line on a wide terminal
    assert "top-1 (final, or the last epoch's), training time" in out
    train = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).stdout
    assert "<bool>" not in train and "--restart" in train
    assert runner.invoke(app, ["--help"]).exit_code == 0

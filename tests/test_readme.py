"""Every `srv` command in the README's bash blocks runs as written: in its dry-run form where it
has one (srv train, srv ablate), else with --help (which still rejects an unknown option or a
missing command). Placeholders become real things: /imagenet an image folder this test writes,
runs/<name>-<hash> a --help."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from reproduce.cli import app

runner = CliRunner()
DRY = ("train", "ablate")  # the commands with --dry-run


def readme_commands() -> list[str]:
    """The srv command lines of the README's ```bash blocks (also torchrun -m reproduce and
    .venv/bin/srv, split at && and ;), comments dropped."""
    text = (REPO / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            for part in re.split(r"&&|;", line):
                words = shlex.split(part)
                if not words:
                    continue
                if words[0] == "torchrun" and "reproduce" in words:
                    words = ["srv", *words[words.index("reproduce") + 1:]]
                if words[0].endswith("/srv"):
                    words[0] = "srv"
                if words[0] == "srv":
                    out.append(shlex.join(words))
    return out


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_check() -> None:
    assert len(COMMANDS) >= 20
    assert any(c.startswith("srv ablate") and "--backend slurm" in c for c in COMMANDS)


@pytest.mark.parametrize("line", COMMANDS)
def test_a_readme_command_runs_as_written(line: str, imagenet_layout: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # runs/ and tables/ of a dry run stay here
    monkeypatch.delenv("SRV_RUNS", raising=False)
    words = [str(imagenet_layout) if w in ("/imagenet", "/x", "PATH") else w
             for w in shlex.split(line)[1:]]
    if words and words[0] in DRY and not any("<" in w for w in words):
        args = [*words, "--dry-run"] if "--dry-run" not in words else words
    else:
        args = [w for w in words if "<" not in w] + ["--help"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, f"{line}\n-> srv {shlex.join(args)}\n{result.output}"

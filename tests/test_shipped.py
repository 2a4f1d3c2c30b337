"""The shipped tables are a function of the shipped records: every grid table under tables/
and tables/claims.md is rebuilt from results/ and must match to the byte, so a stale or
clobbered table cannot land; every commit the records name is in the repository's history."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.records import load_records

runner = CliRunner()
RESULTS = REPO / "results"
TABLES = REPO / "tables"
#: tables that are not grid tables of run records (fvcore counts; published numbers)
NOT_FROM_RECORDS = {"complexity"}


def _shipped_grid_tables() -> list[Path]:
    return sorted(p for p in TABLES.glob("*.md")
                  if p.stem not in NOT_FROM_RECORDS and p.name != "claims.md")


def test_every_shipped_table_has_records() -> None:
    names = {f"{p.stem}.md" for p in RESULTS.glob("*.jsonl")}
    tables = {p.name for p in _shipped_grid_tables()}
    assert tables, "no shipped grid table"
    assert tables <= names, f"tables without records in results/: {sorted(tables - names)}"


def test_shipped_tables_and_verdicts_rebuild_from_the_records(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    monkeypatch.chdir(REPO)  # the report names results/ as a reader of the clone does
    monkeypatch.delenv("SRV_TABLES_DIR", raising=False)
    out = tmp_path / "rebuilt"
    # --force: a confirmatory grid shares the stem grid's AdamW cells, run at the design's
    # commit, and trains the rest later (tests/test_preregistration.py checks every commit)
    result = runner.invoke(app, ["table", "--records", "results", "--tables-dir", str(out),
                                 "--force", "--latex", "--markdown"])
    assert result.exit_code == 0, result.output
    for shipped in _shipped_grid_tables():
        for suffix in (".md", ".tex"):
            want = shipped.with_suffix(suffix)
            if want.exists():
                got = out / want.name
                assert got.exists(), f"{want.name} was not rebuilt from results/"
                assert got.read_text() == want.read_text(), f"{want.name} differs from results/"
        png = shipped.with_suffix(".png")
        if png.exists():
            assert (out / png.name).exists()
    result = runner.invoke(app, ["claims", "--records", "results", "--tables-dir", str(out),
                                 "--force"])
    assert result.exit_code == 0, result.output
    assert (out / "claims.md").read_text() == (TABLES / "claims.md").read_text(), \
        "tables/claims.md differs from what results/ gives"


def test_no_shipped_table_names_a_machine_path() -> None:
    for path in [*TABLES.glob("*.md"), *TABLES.glob("*.tex")]:
        text = path.read_text()
        for root in ("/work/", "/tmp/", "/home/", "/root/"):
            assert root not in text, f"{path.name} names a machine path ({root})"


def test_every_recorded_commit_is_in_the_history() -> None:
    records = [r for f in sorted(RESULTS.rglob("*.jsonl")) for r in load_records(f)]
    assert records
    commits = {r.env.git_commit for r in records}
    assert None not in commits, "a shipped record without its git commit"
    assert not any(r.env.git_dirty for r in records), "a shipped record from a dirty tree"
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=REPO,
                            capture_output=True, text=True)
    if inside.returncode != 0:
        pytest.skip("not a git checkout: the history cannot be checked")
    for commit in sorted(commits):
        found = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=REPO,
                               capture_output=True)
        assert found.returncode == 0, f"records name commit {commit}, not in the history"

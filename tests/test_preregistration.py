"""The pre-registration check (issue 28 (5); reproduce/report/claims/preregistration.py): on a
throw-away git repository, a run at a clean descendant of the design commit passes, and a design
changed after the run, a dirty tree or a commit outside the history fails; the shipped
confirmatory records of the regime scale, where there are any, pass it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import REPO

from reproduce.records import load_records
from reproduce.records.schema import Environment, RunRecord, RunResult, Settings
from reproduce.report.claims import load_claims
from reproduce.report.claims.preregistration import (
    AMENDMENTS,
    DESIGN_FILES,
    Amendment,
    AmendmentsError,
    load_amendments,
    problems,
)

DESIGN = ("design.toml", "stats.py")


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
                               "HOME": str(repo), "PATH": "/usr/bin:/bin"})
    return done.stdout.strip()


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", message)
    return _git(repo, "rev-parse", "HEAD")


def _record(commit: str | None, dirty: bool = False) -> RunRecord:
    settings = Settings("vit-mini-conv", "fmnist", "", "fashion-mnist", 32, 10, 0, 5, "adamw",
                        5e-4, 0.05, 1.0, "abc")
    return RunRecord("stem", "regime", {"stem": "conv"}, 400, "vit-mini-conv-abc", settings,
                     RunResult("done", 5, None, 86.0, 86.0, 2000, 0.7, 0, 600.0, None),
                     Environment(commit, dirty, "0.1.0"))


def test_a_run_must_descend_from_the_design_unchanged(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _commit(repo, {"design.toml": "seeds = [400]\n", "stats.py": "alpha = 0.05\n"}, "design")
    run_at = _commit(repo, {"README": "the runs\n"}, "a later commit the runs ran at")
    assert problems([_record(run_at)], repo, DESIGN) == []
    assert "dirty tree" in problems([_record(run_at, dirty=True)], repo, DESIGN)[0]
    assert "no commit recorded" in problems([_record(None)], repo, DESIGN)[0]
    assert "not in the history" in problems([_record("f" * 40)], repo, DESIGN)[0]
    _commit(repo, {"stats.py": "alpha = 0.10\n"}, "the statistics changed after the results")
    (why,) = problems([_record(run_at)], repo, DESIGN)
    assert why.startswith(f"changed since the run at {run_at[:7]}") and "stats.py" in why


def test_a_declared_amendment_passes_and_a_further_change_fails(tmp_path: Path) -> None:
    """A design file changed after the results passes only with its new content declared (git's
    blob id): the same file changed once more fails again until that change is declared too."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _commit(repo, {"design.toml": "seeds = [400]\n", "stats.py": "alpha = 0.05\n"}, "design")
    run_at = _commit(repo, {"README": "the runs\n"}, "the runs")
    _commit(repo, {"design.toml": "seeds = [400]\nextra = 1\n"}, "an exploratory change")
    blob = _git(repo, "rev-parse", "HEAD:design.toml")
    amended = [Amendment("extra", "a claim designed after part 1", run_at[:7],
                         {"design.toml": blob})]
    assert "design.toml" in problems([_record(run_at)], repo, DESIGN, amendments=[])[0]
    assert problems([_record(run_at)], repo, DESIGN, amendments=amended) == []
    stale = [Amendment("extra", "r", run_at[:7], {"design.toml": "0" * 40})]
    assert "declared in" in problems([_record(run_at)], repo, DESIGN, amendments=stale)[0]
    _commit(repo, {"design.toml": "seeds = [400]\nextra = 2\n"}, "changed again")
    (why,) = problems([_record(run_at)], repo, DESIGN, amendments=amended)
    assert why.startswith(f"changed since the run at {run_at[:7]}: design.toml")


def test_the_shipped_amendments_are_listed_as_exploratory() -> None:
    """Every declared amendment of the regime design names a commit in the history it follows,
    only design files, and is listed by id in docs/claims.md's exploratory changes."""
    amendments = load_amendments(REPO / AMENDMENTS)
    docs = (REPO / "docs" / "claims.md").read_text()
    section = docs[docs.index("### Exploratory changes"):]
    for a in amendments:
        assert set(a.blobs) <= set(DESIGN_FILES), a.id
        assert f"`{a.id}`" in section, a.id
        if subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=REPO,
                          capture_output=True).returncode == 0:
            assert subprocess.run(["git", "cat-file", "-e", f"{a.follows}^{{commit}}"],
                                  cwd=REPO).returncode == 0, a.id


def test_declaring_an_amendment_records_the_files_content(tmp_path: Path) -> None:
    """scripts/declare_amendment.py writes the blob id git gives the file's content, refuses a
    file outside the design and an id declared already."""
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    import declare_amendment

    to = tmp_path / "amendments.toml"
    path = "recipes/claims/wang2022-regime.toml"
    assert declare_amendment.main(["x", "--follows", "abc", "--reason", "r", "--to", str(to),
                                   path]) == 0
    (a,) = load_amendments(to)
    blob = subprocess.run(["git", "hash-object", str(REPO / path)], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert (a.id, a.follows, a.reason, a.blobs) == ("x", "abc", "r", {path: blob})
    assert declare_amendment.main(["x", "--follows", "abc", "--reason", "r", "--to", str(to),
                                   path]) == 2
    assert declare_amendment.main(["y", "--follows", "abc", "--reason", "r", "--to", str(to),
                                   "README.md"]) == 2
    assert len(load_amendments(to)) == 1


def test_an_unreadable_amendments_file_is_one_error_line(tmp_path: Path, capsys) -> None:
    """Bad TOML or an amendment missing a field: one line naming the file and the fix, exit 2
    from the script, and the file is left as it was."""
    import sys

    sys.path.insert(0, str(REPO / "scripts"))
    import declare_amendment

    path = "recipes/claims/wang2022-regime.toml"
    for text, says in [("[[amendment]\nid = 1\n", "is not valid TOML"),
                       ('[[amendment]]\nid = "x"\nreason = "r"\n', "lacks blobs, follows")]:
        to = tmp_path / "amendments.toml"
        to.write_text(text)
        with pytest.raises(AmendmentsError, match=says):
            load_amendments(to)
        assert declare_amendment.main(["y", "--follows", "abc", "--reason", "r", "--to",
                                       str(to), path]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err and str(to) in err
        assert to.read_text() == text


def test_no_design_before_the_run_fails(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    first = _commit(repo, {"README": "x\n"}, "no design yet")
    _commit(repo, {"design.toml": "seeds = [400]\n"}, "design after the run")
    assert "no commit before" in problems([_record(first)], repo, DESIGN)[0]


def test_the_shipped_regime_records_are_the_preregistered_run() -> None:
    """Every shipped record of the regime design's seeds, in any grid and preset its claims
    test (the stem grid's main claims and the stability grids of part 2), passes the check;
    none is a pass only while the design is still unrun (the claims report then says no
    evidence)."""
    cs = load_claims(REPO / "recipes" / "claims" / "wang2022-regime.toml")
    design = cs.design
    assert design is not None and design.preset in cs.scale.presets
    shipped = {(c.grid, c.preset) for c in cs.claims if c.preset and not c.not_testable}
    assert ("stem", design.preset) in shipped and ("lr", "regime") in shipped
    records = [r for grid, preset in sorted(shipped)
               for f in [REPO / "results" / f"{grid}-{preset}.jsonl"] if f.exists()
               for r in load_records(f) if r.seed in design.seeds]
    if subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=REPO,
                      capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: the history cannot be checked")
    assert problems(records, REPO) == []


def test_every_grid_a_regime_claim_runs_is_a_design_file() -> None:
    """The grids of part 2 (lr, warmup, optimizer, lr-wd-edf) fix their presets' settings as
    the stem grid fixes the main claims': a change to one after its results must fail the
    check too."""
    cs = load_claims(REPO / "recipes" / "claims" / "wang2022-regime.toml")
    grids = {c.grid for c in cs.claims if c.preset and not c.not_testable}
    assert grids == {"stem", "lr", "warmup", "optimizer", "lr-wd-edf"}
    assert {f"recipes/grids/{g}.toml" for g in grids} <= set(DESIGN_FILES)

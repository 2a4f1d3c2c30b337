"""Is a confirmatory run the pre-registered one? Checked from its records and the git history
(issue 28 (5)): each run ran at a clean commit that descends from the last commit that changed
the design files (the claims file's design, the scale's recipe and the grids its claims run, the
statistics code), and none of those files changed between that commit and the one being checked
(``HEAD``), unless the change is a declared amendment.

A change after the results is exploratory and must be said so: an **amendment** names the files
it changed with their content afterwards (git's blob id) in :data:`AMENDMENTS`, with its reason,
and docs/claims.md ("Exploratory changes") lists it. A design file that differs from the run's
commit passes only when its content at ``HEAD`` is one an amendment declared, so any further
change fails again until it is declared too.
"""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from reproduce.errors import SrvError
from reproduce.records.schema import RunRecord

__all__ = ["AMENDMENTS", "DESIGN_FILES", "Amendment", "AmendmentsError", "load_amendments",
           "problems"]

#: what a regime-scale design fixes, relative to the repository root
DESIGN_FILES = ("recipes/claims/wang2022-regime.toml", "recipes/fmnist.toml",
                "recipes/grids/stem.toml", "recipes/grids/lr.toml", "recipes/grids/warmup.toml",
                "recipes/grids/lr-wd-edf.toml", "recipes/grids/optimizer.toml",
                "reproduce/report/stats.py",
                "reproduce/report/claims/evidence.py", "reproduce/report/claims/verdicts.py",
                "reproduce/report/claims/spec.py", "reproduce/report/claims/report.py")


#: the declared amendments of the regime design, relative to the repository root
AMENDMENTS = "recipes/claims/amendments/wang2022-regime.toml"


class AmendmentsError(SrvError, ValueError):
    """The amendments file is not valid TOML or an amendment lacks a field."""


@dataclass(frozen=True)
class Amendment:
    """A design change made after confirmatory results: exploratory for the results it follows."""

    id: str
    reason: str
    follows: str  # the results (a commit) it came after
    blobs: dict[str, str] = field(default_factory=dict)  # design file -> git blob id after it


def load_amendments(path: Path) -> list[Amendment]:
    """The ``[[amendment]]`` tables of ``path`` (none when it does not exist); raises
    :class:`AmendmentsError` naming the file and the fix when it cannot be read."""
    if not path.exists():
        return []
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise AmendmentsError(f"{path} is not valid TOML ({err}); fix the file, or restore it "
                              f"with git checkout -- {path}") from None
    out = []
    for spec in doc.get("amendment", []):
        missing = {"id", "reason", "follows", "blobs"} - set(spec)
        if missing:
            raise AmendmentsError(f"{path}: amendment {spec.get('id', '?')} lacks "
                                  f"{', '.join(sorted(missing))}; add them (scripts/"
                                  f"declare_amendment.py writes all four)")
        out.append(Amendment(str(spec["id"]), str(spec["reason"]), str(spec["follows"]),
                             {str(k): str(v) for k, v in spec["blobs"].items()}))
    return out


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def problems(records: Iterable[RunRecord], repo: Path,
             design_files: Sequence[str] = DESIGN_FILES, head: str = "HEAD",
             amendments: Sequence[Amendment] | None = None) -> list[str]:
    """Why ``records`` are not a confirmatory run of the design committed in ``repo`` (empty:
    they are). Each record must name a commit from a clean tree; the last commit at or before
    it that touched ``design_files`` is the design commit, and none of them may differ between
    the run's commit and ``head`` unless ``head``'s content is declared by an amendment
    (default: those of :data:`AMENDMENTS` in ``repo``)."""
    if amendments is None:
        amendments = load_amendments(repo / AMENDMENTS)
    declared = {(path, blob) for a in amendments for path, blob in a.blobs.items()}
    out: list[str] = []
    commits: set[str] = set()
    for rec in records:
        if rec.env.git_commit is None:
            out.append(f"{rec.run}: no commit recorded")
        elif rec.env.git_dirty:
            out.append(f"{rec.run}: ran from a dirty tree at {rec.env.git_commit[:7]}")
        else:
            commits.add(rec.env.git_commit)
    for commit in sorted(commits):
        found = _git(repo, "log", "-1", "--format=%H", commit, "--", *design_files)
        if found.returncode != 0:
            out.append(f"commit {commit[:7]} is not in the history")
            continue
        if not found.stdout.strip():
            out.append(f"no commit before {commit[:7]} fixed the design")
            continue
        changed = _git(repo, "diff", "--name-only", commit, head, "--", *design_files)
        undeclared = [path for path in changed.stdout.split()
                      if (path, _blob(repo, head, path)) not in declared]
        if undeclared:
            out.append(f"changed since the run at {commit[:7]}: {', '.join(undeclared)} "
                       f"(an exploratory change must be declared in {AMENDMENTS})")
    return out


def _blob(repo: Path, head: str, path: str) -> str:
    """The git blob id of ``path`` at ``head`` ("" when it does not exist there)."""
    done = _git(repo, "rev-parse", f"{head}:{path}")
    return done.stdout.strip() if done.returncode == 0 else ""

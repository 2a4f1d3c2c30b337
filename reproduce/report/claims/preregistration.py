"""Is a confirmatory run the pre-registered one? Checked from its records and the git history
(issue 28 (5)): each run ran at a clean commit that descends from the last commit that changed
the design files (the claims file's design, the scale's recipe and the grids its claims run, the
statistics code), and none of those files changed between that commit and the one being checked
(``HEAD``). A
change after the results is exploratory and must be said so (docs/claims.md).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

from reproduce.records.schema import RunRecord

__all__ = ["DESIGN_FILES", "problems"]

#: what a regime-scale design fixes, relative to the repository root
DESIGN_FILES = ("recipes/claims/wang2022-regime.toml", "recipes/fmnist.toml",
                "recipes/grids/stem.toml", "recipes/grids/lr.toml", "recipes/grids/warmup.toml",
                "recipes/grids/lr-wd-edf.toml", "reproduce/report/stats.py",
                "reproduce/report/claims/evidence.py", "reproduce/report/claims/verdicts.py",
                "reproduce/report/claims/spec.py", "reproduce/report/claims/report.py")


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def problems(records: Iterable[RunRecord], repo: Path,
             design_files: Sequence[str] = DESIGN_FILES, head: str = "HEAD") -> list[str]:
    """Why ``records`` are not a confirmatory run of the design committed in ``repo`` (empty:
    they are). Each record must name a commit from a clean tree; the last commit at or before
    it that touched ``design_files`` is the design commit, and none of them may differ between
    the run's commit and ``head``."""
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
        if changed.stdout.strip():
            out.append(f"changed since the run at {commit[:7]}: "
                       f"{', '.join(changed.stdout.split())}")
    return out

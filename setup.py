"""Package data the project layout keeps outside the package (pyproject.toml has the rest).

``recipes/`` (with ``recipes/grids/`` and ``recipes/claims/``) and ``tables/reference/`` stay
at the top of the repository, where readers look for them, and ship inside the wheel as
``reproduce/_resources/recipes`` and ``reproduce/_resources/reference``, so an installed ``srv``
(``pip install .``, not editable) finds them from any directory; ``reproduce/resources.py``
resolves both layouts.
"""

import json
import subprocess
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class BuildWithCommit(build_py):
    """Record the clone's git commit (and whether ``reproduce/`` had local changes) in the
    built package as ``reproduce/_build_info.json``: an installed srv, run outside any checkout,
    still records the code it runs in every run (reproduce/training/runs.py: git_state)."""

    def run(self) -> None:
        super().run()
        commit = _git("rev-parse", "HEAD")
        dirty = (bool(_git("status", "--porcelain", "--untracked-files=no", "--", "reproduce"))
                 if commit else None)
        target = Path(self.build_lib) / "reproduce" / "_build_info.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"git_commit": commit, "git_dirty": dirty}) + "\n")

RESOURCES = {
    "reproduce._resources.recipes": "recipes",
    "reproduce._resources.recipes.grids": "recipes/grids",
    "reproduce._resources.recipes.claims": "recipes/claims",
    "reproduce._resources.reference": "tables/reference",
}

setup(
    cmdclass={"build_py": BuildWithCommit},
    packages=find_packages(include=["reproduce", "reproduce.*"]) + list(RESOURCES),
    package_dir=RESOURCES,
    package_data={name: ["*.toml", "*.csv", "*.md"] for name in RESOURCES},
)

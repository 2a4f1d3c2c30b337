#!/usr/bin/env -S python3 -m nox -f
"""Nox sessions for srv: ``tests`` (default, CI), ``lint``, ``smoke``, ``bench`` and ``gpu``.

pip/virtualenv only: torch 2.14.1 and torchvision 0.29.1 come from the machine's local wheel
cache; uv would ignore it and download several GB. No interpreter downloads.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "virtualenv"
nox.options.download_python = "never"
nox.options.error_on_missing_interpreters = False
nox.options.reuse_venv = "yes"

PYTHON = "3.11"


@nox.session(python=PYTHON, reuse_venv=True)
def tests(session: nox.Session) -> None:
    """Run the test suite on CPU (pass pytest options after --, e.g. -- -m 'not slow'); the
    DALI extra is installed so the DALI pipeline's CPU tests run too."""
    session.install("-e", ".[test,dali]")
    session.run("pytest", *(session.posargs or ["-q"]), env={"OMP_NUM_THREADS": "2"})


@nox.session(python=PYTHON, reuse_venv=True, default=False)
def lint(session: nox.Session) -> None:
    """Ruff lint of the package, tests, noxfile and scripts."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "reproduce", "tests", "noxfile.py", "scripts")


@nox.session(python=PYTHON, reuse_venv=True, default=False)
def smoke(session: nox.Session) -> None:
    """The README's main job: the stem ablation at the quick scale (4 stems x 3 seeds, 8 epochs,
    two cells at a time) on the embedded digits data, ending with the claims' verdicts."""
    session.install("-e", ".")
    session.run("srv", "ablate", "stem", "--preset", "quick", "--jobs", "2", *session.posargs)


@nox.session(python=PYTHON, reuse_venv=True, default=False)
def bench(session: nox.Session) -> None:
    """Training-throughput benchmark (GPU when present): srv models against plain timm."""
    session.install("-e", ".")
    session.run("srv", "bench", *session.posargs)


@nox.session(python=False, default=False)
def gpu(session: nox.Session) -> None:
    """The GPU check (scripts/gpu_check.py, under 6 minutes on one H100) in the environment nox
    runs from: no virtualenv, no install, no network (srv from this checkout on PYTHONPATH), the
    ``python`` on PATH. It fails, never skips, when it cannot run (a missing module is named,
    exit 2). Options after ``--``: ``--out DIR``, ``--timeout S``, ``--steps``, ``--cpu``."""
    root = Path(__file__).resolve().parent
    python = shutil.which("python") or shutil.which("python3") or sys.executable
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    session.run(python, str(root / "scripts" / "gpu_check.py"), *session.posargs,
                env={"PYTHONPATH": path}, external=True)


if __name__ == "__main__":
    nox.main()

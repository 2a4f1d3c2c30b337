#!/usr/bin/env -S python3 -m nox -f
"""Nox sessions for srv: ``tests`` (default, CI), ``lint``, ``smoke``, ``bench`` and ``gpu``.

pip/virtualenv only: torch 2.14.1 and torchvision 0.29.1 come from the machine's local wheel
cache; uv would ignore it and download several GB. No interpreter downloads.
"""

from __future__ import annotations

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
    """Ruff lint of the package, tests and noxfile."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "reproduce", "tests", "noxfile.py")


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


@nox.session(python=PYTHON, reuse_venv=True, default=False)
def gpu(session: nox.Session) -> None:
    """The GPU check (scripts/gpu_check.py, under 10 minutes on one GPU): 2-epoch bf16 and fp16
    runs on synthetic JPEGs, a SIGKILL mid-epoch and its resume, srv bench's pipelines; figures
    to tables/benchmarks/gpu-check-<card>.json. ``-- --cpu`` is its tiny CPU dry run."""
    session.install("-e", ".")
    session.run("python", "scripts/gpu_check.py", *session.posargs)


if __name__ == "__main__":
    nox.main()

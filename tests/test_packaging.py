"""Installed as on a cluster: a wheel (not an editable install) run from another directory finds
its recipes, grids and published numbers, and writes runs/ and tables/ under the current
directory.

The wheel is built from a copy of what a source distribution holds, with the environment's
setuptools (``--no-build-isolation``: no download, a few seconds), installed with
``--target`` into a folder that is the only entry of ``PYTHONPATH``, and run as
``python -m reproduce`` from an empty directory, so neither the checkout nor an editable
install can answer in its place.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import conftest
import pytest

REPO = conftest.REPO
#: what a source distribution holds (pyproject.toml / setup.py decide what the wheel gets)
SOURCES = ("pyproject.toml", "setup.py", "README.md", "reproduce", "recipes", "tables/reference")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    for name in SOURCES:
        if not (REPO / name).exists():
            continue
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
                    str(src), "-w", str(tmp / "dist")], check=True, cwd=tmp)
    (wheel,) = (tmp / "dist").glob("srv_reproduce-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target",
                    str(tmp / "site"), str(wheel)], check=True, cwd=tmp)
    return tmp / "site"


@pytest.fixture
def run_installed(installed: Path, tmp_path: Path):  # noqa: ANN201
    """Run python in an empty directory with only the installed copy importable."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SRV_") and k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(installed), OMP_NUM_THREADS="1")
    cwd = tmp_path / "work"
    cwd.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        out = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    run.cwd = cwd  # type: ignore[attr-defined]
    return run


def test_the_installed_copy_finds_its_shipped_files(installed: Path, run_installed) -> None:
    out = run_installed("-c", (
        "import json, reproduce\n"
        "from reproduce.recipes.recipe import list_recipes, recipe_dir\n"
        "from reproduce.recipes.grids import list_grids\n"
        "from reproduce.report.reference import reference_names, reference_dir, tables_dir\n"
        "from reproduce.training.runs import git_state\n"
        "print(json.dumps({'file': reproduce.__file__, 'recipes': list_recipes(),\n"
        "  'recipe_dir': str(recipe_dir()), 'grids': list_grids(),\n"
        "  'references': reference_names(), 'reference_dir': str(reference_dir()),\n"
        "  'tables': str(tables_dir()), 'git': git_state()['git_commit']}))\n"))
    found = json.loads(out.stdout)
    assert Path(found["file"]).is_relative_to(installed)
    assert Path(found["recipe_dir"]).is_relative_to(installed)
    assert Path(found["reference_dir"]).is_relative_to(installed)
    assert {"deit", "xiao", "mini"} <= set(found["recipes"])
    shipped_grids = sorted(p.stem for p in (REPO / "recipes" / "grids").glob("*.toml"))
    assert found["grids"] == shipped_grids
    assert found["references"] == sorted(p.stem for p in
                                         (REPO / "tables" / "reference").glob("*.csv"))
    assert found["tables"] == str(run_installed.cwd / "tables")
    assert found["git"] is None  # an installed copy is not a checkout: no commit to claim


def test_the_installed_cli_writes_under_the_current_directory(run_installed) -> None:
    cwd = run_installed.cwd
    dry = run_installed("-m", "reproduce", "ablate", "stem", "--dry-run")
    assert "8 cells" in dry.stdout and "runs/vit-mini-conv-" in dry.stdout
    ref = run_installed("-m", "reproduce", "table", "reference")
    assert "Xiao et al. 2021" in ref.stdout
    # outputs go under the runs folder: a clone's shipped tables/ is never written by default
    assert (cwd / "runs" / "tables" / "reference-deit.md").is_file()
    run_installed("-m", "reproduce", "train", "vit-mini-patch", *conftest.tiny_args(epochs=1),
                  "--no-progress")
    (run,) = (p for p in (cwd / "runs").iterdir() if p.name.startswith("vit-"))
    assert json.loads((run / "result.json").read_text())["epochs"] == 1
    claims = run_installed("-m", "reproduce", "claims")  # the shipped claims file is found
    assert "wang2022.toml" in claims.stdout
    # a plain srv train run is no grid cell: no claim has evidence, so no claims.md is written
    assert "not written: no finished runs" in claims.stdout
    assert not (cwd / "runs" / "tables" / "claims.md").exists()
    assert sorted(p.name for p in cwd.iterdir()) == ["runs"]

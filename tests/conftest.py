"""Shared fixtures: tiny, real training settings on the digits data (CPU, seconds per run)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

#: a run of a vit-mini model that takes about a second per epoch on one CPU core
TINY = {
    "img_size": 16,
    "train_subset": 256,
    "val_subset": 101,  # odd on purpose: sharding must count every image once
    "batch_size": 64,
    "epochs": 2,
    "warmup_epochs": 1.0,
}


def tiny_args(**extra: object) -> list[str]:
    """``--set`` arguments for :data:`TINY` (plus ``extra``)."""
    out: list[str] = []
    for key, value in {**TINY, **extra}.items():
        out += ["--set", f"{key}={value}"]
    return out


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def srv_cmd() -> list[str]:
    """Run the CLI in a subprocess exactly as a user would."""
    return [sys.executable, "-m", "reproduce"]


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # 2 cores: one thread per process (torchrun starts 2)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """srv's caches (the DALI loader's image checks) go to a temporary folder, not ~/.cache."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def imagenet_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageNet-layout folder big enough for a full-scale dry run (2,560 training images in
    2 classes, more than the largest global batch of a recipe, 2,048): one real JPEG written by
    :func:`~reproduce.data.jpeg_folder.write_jpeg_folder`, hard-linked under every name (a dry
    run lists the files and never decodes them)."""
    from reproduce.data.jpeg_folder import JpegFolderSpec, write_jpeg_folder

    root = write_jpeg_folder(tmp_path_factory.mktemp("imagenet") / "data", JpegFolderSpec(
        classes=2, train_per_class=1, val_per_class=1, sizes=((16, 16),)))
    for cls in sorted((root / "train").iterdir()):
        (first,) = cls.iterdir()
        for i in range(1, 1280):
            os.link(first, cls / f"copy{i:05d}{first.suffix}")
    return root


class Killed(RuntimeError):
    """A node lost mid-run (raised from inside the epoch loop by :func:`train_until_killed`)."""


def train_until_killed(cfg: Any, runs_root: Path, after_step: int = 6) -> Path:
    """Train ``cfg`` under ``runs_root`` and die right after the update ``after_step`` was read
    back (as a SIGKILL would, past the last checkpoint); returns the run folder."""
    from reproduce.training.engine import train
    from reproduce.training.loop import EpochLoop

    flush = EpochLoop._flush

    def dying_flush(self: EpochLoop, *args: Any, **kwargs: Any) -> None:
        flush(self, *args, **kwargs)
        if self.step >= after_step:
            raise Killed("the node went away")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(EpochLoop, "_flush", dying_flush)
        with pytest.raises(Killed):
            train(cfg, runs_root, progress=False)
    return runs_root / cfg.run_name


def evaluate_runs(runs: Path | str, claims: Any = None, **kwargs: Any) -> Any:
    """``srv claims`` over a runs folder: its runs exported as records (the diversity claim's
    grids measured on their checkpoints unless ``diversity=False``), then evaluated."""
    from reproduce.commands._records import record_index
    from reproduce.report import claims as cl

    cs = claims or cl.load_claims()
    measure = ({c.grid for c in cs.claims if c.statistic == "diversity"}
               if kwargs.get("diversity", True) else None)
    return cl.evaluate(record_index(Path(runs), None, measure), cs, **kwargs)

"""One atomic-write helper for every file srv writes: modes as ``open()`` gives them (readable by
the group under ``umask 002``), no temporary files left, old content kept on failure, and the
process umask never touched (the cell lock's heartbeat thread runs beside the writers)."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from reproduce.experiments.locks import CellLock
from reproduce.models import flops
from reproduce.report import plots, render
from reproduce.training import runs
from reproduce.utils import atomic


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    """Set the process umask for one test (single-threaded here) and restore it after."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _writers(folder: Path) -> dict[str, Callable[[], Path]]:
    """Each kind of file srv writes, through the function the code base calls."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def plot() -> Path:
        fig = Figure(figsize=(1, 1))
        FigureCanvasAgg(fig)
        fig.subplots().plot([0, 1], [1, 0])
        return plots._save(fig, folder / "curves.png")

    def flops_table() -> Path:
        flops.write_text_atomic(folder / "complexity.md", "| model |\n")
        return folder / "complexity.md"

    def then(path: Path, write: Callable[[], object]) -> Callable[[], Path]:
        return lambda: (write(), path)[1]

    run = runs.RunDir(folder / "run")
    return {
        "text": then(folder / "a.txt",
                     lambda: runs.atomic_write_text(folder / "a.txt", "hello\n")),
        "json": then(folder / "a.json",
                     lambda: runs.atomic_write_json(folder / "a.json", {"x": 1})),
        "checkpoint": then(folder / "last.pt", lambda: runs.atomic_torch_save(
            {"w": torch.ones(3)}, folder / "last.pt")),
        "status": then(run.status_path, lambda: run.write_status("running", 1, 2)),
        "table": then(folder / "stem.md", lambda: render.write_table("| a |\n",
                                                                    folder / "stem.md")),
        "flops": flops_table,
        "plot": plot,
    }


@pytest.mark.parametrize("mask", [0o002, 0o022, 0o027, 0o077])
def test_files_get_the_mode_open_would_give(tmp_path: Path, mask: int, umask) -> None:
    umask(mask)
    reference = tmp_path / "plain"
    reference.write_text("x")  # what open() gives under this umask
    expect = stat.S_IMODE(reference.stat().st_mode)
    assert expect == 0o666 & ~mask == atomic.file_mode()
    for kind, write in _writers(tmp_path).items():
        path = write()
        assert stat.S_IMODE(path.stat().st_mode) == expect, kind
    assert not list(tmp_path.rglob("*.tmp"))


def test_group_can_read_under_umask_002(tmp_path: Path, umask) -> None:
    umask(0o002)
    path = tmp_path / "best.pt"
    runs.atomic_torch_save({"w": torch.zeros(1)}, path)
    assert path.stat().st_mode & stat.S_IRGRP and path.stat().st_mode & stat.S_IWGRP
    assert torch.load(path, weights_only=True)["w"].tolist() == [0.0]


def test_no_writer_touches_the_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Setting the umask to read it changes it under every other thread: never done."""
    def refuse(_mask: int) -> int:
        raise AssertionError("os.umask called while writing a file")

    monkeypatch.setattr(os, "umask", refuse)
    for write in _writers(tmp_path).values():
        write()


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    runs.atomic_write_json(path, {"top1": 1.0})
    with pytest.raises(TypeError):
        runs.atomic_write_text(path, 42)  # type: ignore[arg-type]
    with pytest.raises(Exception):  # noqa: B017 - any pickling error
        runs.atomic_torch_save({"f": lambda: 0}, tmp_path / "last.pt")
    assert json.loads(path.read_text()) == {"top1": 1.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_concurrent_writers_beside_a_lock_heartbeat(tmp_path: Path, umask) -> None:
    """Writers in several threads while a cell lock beats and another thread creates files
    with open(): every file gets the umask's mode and the umask is unchanged at the end."""
    umask(0o002)
    lock = CellLock(tmp_path / "locks" / "cell.lock", heartbeat_s=0.001, what="cell")
    assert lock.acquire()
    errors: list[BaseException] = []
    plain: list[Path] = []

    def writer(k: int) -> None:
        try:
            for i in range(40):
                runs.atomic_write_json(tmp_path / f"w{k}" / f"{i}.json", {"i": i})
                render.write_table("| a |\n", tmp_path / f"w{k}" / f"{i}.md")
        except BaseException as err:  # surfaced below
            errors.append(err)

    def opener() -> None:
        for i in range(200):
            p = tmp_path / "plain" / f"{i}.txt"
            p.parent.mkdir(exist_ok=True)
            p.write_text("x")
            plain.append(p)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    threads.append(threading.Thread(target=opener))
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        lock.release()
    assert not errors, errors
    current = os.umask(0o002)
    assert current == 0o002
    modes = {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*") if p.is_file()}
    assert modes == {0o664}, sorted(oct(m) for m in modes)
    assert not list(tmp_path.rglob("*.tmp"))

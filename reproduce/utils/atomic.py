"""One way to write a file: atomically, with the mode a plain ``open()`` would give it.

Every file srv writes (run files, checkpoints, tables, plots, benchmark records) goes through
:func:`atomic_open`: the content is written to a temporary file in the destination folder,
flushed and fsynced, given its final mode, then renamed over the destination with
``os.replace`` (atomic on POSIX within one file system), and the folder is fsynced so the rename
survives a crash. A reader (``srv ablate`` on another node, a table build while a run trains)
sees the old file or the new one, never a half-written one; a writer that fails or is killed
leaves the old file and, at worst, a ``.<name>.*.tmp`` file beside it (removed on failure).

**Modes.** ``tempfile.mkstemp`` creates its file 0600, so a renamed temp file would be private
to its owner: in a runs directory shared by a group, nobody else could read a result. Files get
``0o666 & ~umask`` instead, what ``open()`` gives, so the user's umask (``umask 002`` for group
sharing) decides as for any other file. The umask is read **without changing it**: from
``/proc/self/status`` (``Umask:``, Linux >= 4.7) at every write, so the value is current.
Reading it with ``os.umask`` means setting it and setting it back, which changes a process-wide
value under every other thread (the cell lock's heartbeat, loader threads) and, when two threads
do it at once, can leave the umask at the temporary value for good. Where ``/proc`` is missing
(macOS) it is read that way once, when this module is imported, under a lock, with the
restrictive 0o077 as the temporary value, so a file another thread creates meanwhile is at
worst too private, never world-writable.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_text", "atomic_write_json", "atomic_torch_save",
           "atomic_savefig", "current_umask", "file_mode"]

_PROC_STATUS = "/proc/self/status"
_LOCK = threading.Lock()


def _proc_umask() -> int | None:
    try:
        with open(_PROC_STATUS, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_by_toggling() -> int:
    with _LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


#: the umask at import, for systems without /proc (read once, see the module docstring)
_IMPORT_UMASK = _proc_umask()
if _IMPORT_UMASK is None:
    _IMPORT_UMASK = _umask_by_toggling()


def current_umask() -> int:
    """The process umask, read without changing it (``/proc``; else the value at import)."""
    mask = _proc_umask()
    return _IMPORT_UMASK if mask is None else mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory: the rename still happened
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: Path | str, binary: bool = False,
                encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``path`` when the block succeeds.

    On an exception in the block nothing at ``path`` changes and the temporary file is removed.
    Parent folders are created as needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w",
                       **({} if binary else {"encoding": encoding})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.chmod(f.fileno() if os.chmod in os.supports_fd else tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path) as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: Path | str, data: Any) -> Path:
    """``data`` as indented JSON with sorted keys (non-JSON values as ``str``)."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def atomic_torch_save(obj: Any, path: Path | str) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (a checkpoint is never half-written)."""
    import torch

    with atomic_open(path, binary=True) as f:
        torch.save(obj, f)
    return Path(path)


def atomic_savefig(fig: Any, path: Path | str, **kwargs: Any) -> Path:
    """A matplotlib figure saved to ``path`` atomically, in the format of its suffix."""
    path = Path(path)
    kwargs.setdefault("format", path.suffix.lstrip(".") or "png")
    with atomic_open(path, binary=True) as f:
        fig.savefig(f, **kwargs)
    return path

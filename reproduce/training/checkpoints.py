"""Reading a checkpoint srv wrote, with one clear error for a file that is not one.

``srv eval``, ``srv analyze`` and every other reader of ``last.pt`` / ``best.pt`` go through
:func:`read_checkpoint`. A file that is not a checkpoint (a log, a timm or DeiT checkpoint
holding other entries), a truncated one (a copy cut short, a disk that filled up before the
atomic writer existed) or an unreadable one becomes a :class:`~reproduce.errors.SrvError`: one
line naming the file and what is wrong, exit code 2, instead of a traceback from inside
``torch.load``'s zip reader or unpickler.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reproduce.errors import SrvError

__all__ = ["read_checkpoint", "summarize", "REQUIRED_KEYS"]

#: what every srv checkpoint holds (``best.pt`` only these two; ``last.pt`` the training state)
REQUIRED_KEYS = ("model", "config")
_FIX = "give a run directory or its last.pt / best.pt"


def summarize(err: BaseException, limit: int = 140) -> str:
    """``Type: message`` of an exception on one line, cut to ``limit`` characters."""
    text = " ".join(str(err).split())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def read_checkpoint(path: Path | str, map_location: Any = "cpu",
                    mmap: bool = False) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of an srv checkpoint, checked.

    Raises:
        SrvError: the file is missing, unreadable, truncated, not a torch file, or a torch file
            without srv's ``model`` and ``config`` entries.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise SrvError(f"no checkpoint file at {path}: {_FIX}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # the zip reader, the unpickler, the OS: all mean "not readable"
        raise SrvError(f"{path} is not a readable srv checkpoint ({summarize(err)}); it may "
                       f"be truncated (an interrupted copy, a full disk) or another kind of "
                       f"file: {_FIX}") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        raise SrvError(f"{path} is a torch file but not an srv checkpoint (it lacks the "
                       f"'model' and 'config' entries srv writes): {_FIX}")
    return ckpt

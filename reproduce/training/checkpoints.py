"""Reading a checkpoint srv wrote, with one clear error for a file that is not one.

``srv eval``, ``srv analyze`` and every other reader of ``last.pt`` / ``best.pt`` go through
:func:`read_checkpoint`. A file that is not a checkpoint (a log, a timm or DeiT checkpoint
holding other entries), a truncated one (a copy cut short, a disk that filled up before the
atomic writer existed) or an unreadable one becomes a :class:`~reproduce.errors.SrvError`: one
line naming the file and what is wrong, exit code 2, instead of a traceback from inside
``torch.load``'s zip reader or unpickler.

Resume reads ``last.pt`` to the CPU (as DeiT's ``main.py`` does, ``map_location='cpu'``):
``load_state_dict`` copies weights and optimizer state to the device, and the RNG states stay
CPU ByteTensors, the only kind ``torch.set_rng_state`` / ``torch.cuda.set_rng_state`` accept.
Only the current device's CUDA RNG state is saved and restored, so a run resumes where fewer
GPUs are visible; every epoch reseeds all RNGs from (seed, epoch, rank) anyway.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from reproduce.errors import SrvError

__all__ = ["read_checkpoint", "summarize", "REQUIRED_KEYS", "rng_state", "set_rng_state",
           "load_checkpoint_model"]

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


def rng_state() -> dict[str, Any]:
    """Python's, numpy's, torch's CPU and (on CUDA) the current device's RNG state."""
    import torch

    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's only
    return state


def _cpu_bytes(t: Any) -> Any:
    """An RNG state as the CPU ByteTensor torch's setters require, whatever device or dtype a
    loader mapped it to."""
    import torch

    return torch.as_tensor(t).detach().to(device="cpu", dtype=torch.uint8)


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`'s states; a list of CUDA states (older checkpoints saved every
    visible device's) restores the current device's entry when it has one."""
    import torch

    torch.set_rng_state(_cpu_bytes(state["torch"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, torch.as_tensor(keys).cpu().numpy().astype(np.uint32), *rest))
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),)  # type: ignore[arg-type]
                    + tuple(state["python"][2:]))
    cuda = state.get("cuda")
    if cuda is None or not torch.cuda.is_available():
        return
    if isinstance(cuda, list | tuple):
        index = torch.cuda.current_device()
        cuda = cuda[index] if index < len(cuda) else None
    if cuda is not None:
        torch.cuda.set_rng_state(_cpu_bytes(cuda))


def load_checkpoint_model(path: Path | str, weights: str = "last",
                          device: Any = "cpu") -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Rebuild a model from a run directory or a ``.pt`` file.

    Args:
        path: a run directory (``weights`` picks ``best.pt`` / ``last.pt`` / the EMA of
            ``last.pt``) or a checkpoint file.
        weights: ``best``, ``last`` or ``ema``.

    Returns:
        ``(model in eval mode, config dict, info)`` where info says which weights were loaded.

    Raises:
        SrvError: one line naming the file, for anything that is not a usable srv checkpoint
            (missing, truncated, another kind of file, weights that do not fit its config).
    """
    from reproduce.training.runnable import build_model

    path = Path(path)
    if path.is_dir():
        name = "best.pt" if weights == "best" else "last.pt"
        ckpt_path = path / name
    else:
        ckpt_path = path
    if not ckpt_path.exists():
        raise SrvError(f"no checkpoint at {ckpt_path}: give a run directory that has trained "
                       f"at least one epoch, or a .pt file")
    ckpt = read_checkpoint(ckpt_path, map_location=device)
    cfg = ckpt["config"]
    state = ckpt["model"]
    if weights == "ema":
        if not ckpt.get("ema"):
            raise SrvError(f"{ckpt_path} has no EMA weights: the run had ema_decay = 0; use "
                           f"--weights best or last")
        state = ckpt["ema"]
    try:
        model = build_model(cfg, state["head.weight"].shape[0])
        model.load_state_dict(state)
    except SrvError:
        raise
    except Exception as err:  # a config or weights this version of srv cannot rebuild
        raise SrvError(f"{ckpt_path}: its weights do not fit the model its config describes "
                       f"({summarize(err)}); was it written by another srv version or "
                       f"edited?") from None
    model.to(device).eval()
    return model, cfg, {"checkpoint": str(ckpt_path), "weights": weights,
                        "epoch": ckpt.get("epoch")}

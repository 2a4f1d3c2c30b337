"""Checkpoints: reading them, resuming a run from one, and starting a run from one's weights.

* :func:`read_checkpoint`: every reader of ``last.pt`` / ``best.pt`` (resume, ``srv eval``,
  ``srv analyze``) gets one :class:`~reproduce.errors.SrvError` line (exit code 2) for a file
  that is not an srv checkpoint (missing, truncated, another kind of file), never a traceback
  from inside ``torch.load``.
* Resume: rerunning a run's command takes up its own ``last.pt`` (:func:`resume_point`,
  :func:`load_training_state`), read to the CPU as DeiT's ``main.py`` does; ``--resume PATH``
  (:func:`resume_config`) continues another run's state, where only ``epochs`` may change (a
  new run whose schedule is rebuilt for the new total, timm's ``--resume`` with new
  ``--epochs``). RNG states: Python's, numpy's, torch's CPU and the current CUDA device's.
* ``--initial-checkpoint PATH`` (:func:`initial_config`, :func:`load_initial`): a new run from
  the checkpoint's weights (not its EMA: timm's default), fresh optimizer and schedule:
  finetuning; a classifier of another class count is re-initialised, any other misfit refused.

Either start makes the checkpoint's SHA-256 part of the new run's identity. Details:
docs/training.md ("Resume"). May import: :mod:`.builders`, :mod:`.config`, :mod:`.runs`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np

from reproduce.errors import SrvError
from reproduce.training.config import RunConfig, StartFrom, config_diff, neutralise_inert_keys
from reproduce.training.runs import RunDir

__all__ = ["REQUIRED_KEYS", "checkpoint_file", "file_sha256", "fit_state", "initial_config",
           "load_checkpoint_model", "load_initial", "load_training_state", "read_checkpoint",
           "resume_config", "resume_point", "rng_state", "set_rng_state", "summarize"]

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
    from reproduce.training.builders import build_model

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


def checkpoint_file(path: Path | str, flag: str) -> Path:
    """``PATH/last.pt`` for a run folder, ``PATH`` for a file; one-line error otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / "last.pt").is_file():
            raise SrvError(f"{flag} {path}: the folder has no last.pt (a run that has not "
                           f"finished an epoch, or not a run folder): give a run folder or a .pt")
        return path / "last.pt"
    if not path.is_file():
        raise SrvError(f"{flag} {path}: no such file or folder: give a run folder or its last.pt")
    return path


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resume_config(model: str, recipe: str | None, overrides: dict[str, Any], name: str | None,
                  path: Path | str, run_dir: Path | str | None
                  ) -> tuple[RunConfig, Path | None]:
    """The config of ``srv train MODEL --resume PATH`` and the run folder to use (None: the
    default ``<runs-dir>/<name>-<hash>``)."""
    from reproduce.models import get_entry
    from reproduce.recipes.recipe import apply_overrides, load_recipe

    file = checkpoint_file(path, "--resume")
    ckpt = read_checkpoint(file, mmap=True)
    if "optimizer" not in ckpt:
        raise SrvError(f"{file} holds weights only (a best.pt): --resume needs a last.pt (the "
                       f"run folder); to start from these weights use --initial-checkpoint")
    source = RunConfig.from_dict(ckpt["config"])
    if get_entry(model).name != source.model:
        raise SrvError(f"--resume {path} is a run of {source.model}, not {model}: give "
                       f"{source.model}, or start {model} from its weights with "
                       f"--initial-checkpoint (same architecture only)")
    if recipe is not None and load_recipe(recipe)[1]["name"] != source.recipe_name:
        raise SrvError(f"--resume {path} continues a run of recipe {source.recipe_name}, not "
                       f"{recipe}: drop --recipe (the checkpoint's recipe is used)")
    resolved, _ = neutralise_inert_keys(apply_overrides(source.recipe, overrides), overrides)
    cfg = RunConfig(source.model, source.recipe_name, resolved, name or source.name,
                    start=source.start)
    changed = [d for d in config_diff(source.to_dict(), cfg.to_dict())
               if not d.startswith(("epochs:", "name:"))]
    if changed:
        raise SrvError(f"--resume {path} continues that run with its own recipe, and this "
                       f"command changes {changed[0]}: only --epochs may change (and --data, "
                       f"--accum-steps); start a new recipe from its weights with "
                       f"--initial-checkpoint")
    done = int(ckpt["epoch"])
    if cfg.recipe.epochs <= done:
        raise SrvError(f"{file} has trained {done} epochs, all of a {cfg.recipe.epochs}-epoch "
                       f"schedule: give --epochs above {done} to continue on a longer one")
    folder = file.parent if (file.parent / "config.json").is_file() else None
    same_place = folder is not None and (run_dir is None
                                         or Path(run_dir).resolve() == folder.resolve())
    if cfg.identity() == source.identity() and same_place:
        return cfg, folder  # the same run: continue it in its own folder
    start = StartFrom("resume", str(file.resolve()), file_sha256(file), done)
    return dataclasses.replace(cfg, start=start), Path(run_dir) if run_dir else None


def fit_state(model: Any, state: dict[str, Any], file: Path | str
              ) -> tuple[dict[str, Any], list[str]]:
    """``state`` made loadable into ``model``: entries of the classifier (``head.*``) whose
    shape differs are dropped (the head keeps its fresh initialisation) with a note; any other
    missing, extra or misshapen entry is a :class:`SrvError`."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    head = [k for k in wrong if k.startswith("head.")]
    bad = missing + extra + [k for k in wrong if k not in head]
    if bad:
        k = bad[0]
        what = (f"{k} missing" if k in missing else f"{k} not in the model" if k in extra
                else f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        raise SrvError(f"{file}: its weights do not fit this model ({len(bad)} entries differ, "
                       f"e.g. {what}): --initial-checkpoint needs the same model, stem, "
                       f"image size and stride")
    notes = []
    if head:
        notes.append(f"note: the classifier head is re-initialised ({file} has "
                     f"{state['head.weight'].shape[0]} classes, this run "
                     f"{own['head.weight'].shape[0]})")
        state = {k: v for k, v in state.items() if k not in head}
    return state, notes


def initial_config(cfg: RunConfig, path: Path | str) -> RunConfig:
    """``cfg`` starting from the weights in ``path`` (checked against the model's shapes on the
    ``meta`` device, so a misfit is refused before any data is read)."""
    import torch

    from reproduce.training.builders import build_model, num_classes

    file = checkpoint_file(path, "--initial-checkpoint")
    ckpt = read_checkpoint(file, mmap=True)
    try:
        with torch.device("meta"):
            model = build_model(cfg, num_classes(cfg.recipe))
    except SrvError:
        raise
    except Exception as err:  # the model's own refusal shows up in the run's check as well
        raise SrvError(f"{cfg.model} cannot be built: {summarize(err)}") from None
    _, notes = fit_state(model, ckpt["model"], file)
    start = StartFrom("initial", str(file.resolve()), file_sha256(file), int(ckpt.get("epoch", 0)))
    return dataclasses.replace(cfg, start=start, notes=cfg.notes + tuple(notes))


def load_initial(model: Any, start: StartFrom) -> None:
    """Load the initial checkpoint's weights into ``model`` (on any device)."""
    ckpt = read_checkpoint(start.path, map_location="cpu")
    state, notes = fit_state(model, ckpt["model"], start.path)
    model.load_state_dict(state, strict=not notes)


def resume_point(run: RunDir, cfg: RunConfig) -> tuple[Path, RunDir | None] | None:
    """Where a run takes up its training: its own ``last.pt`` (``None`` as the source run), or,
    under ``--resume`` with a changed epoch count, the source run's checkpoint and folder
    (whose metrics up to the checkpoint become this run's first); None: a fresh start."""
    if run.last_ckpt.exists():
        return run.last_ckpt, None
    if cfg.start is not None and cfg.start.kind == "resume":
        return Path(cfg.start.path), RunDir(Path(cfg.start.path).parent)
    return None


def load_training_state(path: Path, model: Any, optimizer: Any, sched: Any, scaler: Any,
                        ema: Any, epochs: int) -> dict[str, Any]:
    """Load ``path``'s training state into the run's parts and restore the RNGs; returns the
    checkpoint (its counters: ``epoch``, ``step``, ``best_top1``, ...)."""
    # to the CPU: load_state_dict copies to the device, and the RNG states must stay CPU
    # ByteTensors (torch.set_rng_state / torch.cuda.set_rng_state accept nothing else)
    ckpt = read_checkpoint(path, map_location="cpu")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    # the schedule is a function of the config and the update count: a checkpoint of
    # another epoch count holds timm's state for the old total (t_initial), so it is left
    # out and the schedule continues on the new total (timm's --resume with new --epochs)
    if ckpt["scheduler"] is not None and ckpt["config"].get("epochs") == epochs:
        sched.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt["scaler"] is not None:
        scaler.load_state_dict(ckpt["scaler"])
    if ema is not None and ckpt["ema"] is not None:
        ema.module.load_state_dict(ckpt["ema"])
    set_rng_state(ckpt["rng"])
    return ckpt

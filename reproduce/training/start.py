"""Starting a run from a checkpoint: ``srv train --resume PATH`` and ``--initial-checkpoint PATH``,
with the meanings of timm's ``train.py`` flags of the same names.

* ``--resume PATH`` (a run folder or its ``last.pt``) continues that run's training state:
  weights, optimizer, loss scaler, EMA, epoch and update count, RNG. The config is the
  checkpoint's own with the flags given on top, and only ``epochs`` (and keys outside the run's
  identity, such as ``--data`` or ``--accum-steps``) may change. The same config continues in
  the run's own folder (exactly what rerunning its command does); a changed epoch count is a new
  run, in its own folder, whose schedule is rebuilt for the new total and taken up at the
  checkpoint's update count (timm's cosine on the new ``t_initial``: a longer schedule continues
  with the new total), and whose metrics begin with the source run's epochs.
* ``--initial-checkpoint PATH`` starts a new run from the checkpoint's weights (``model``, not
  its EMA: timm's default) with a fresh optimizer, schedule and epoch count: finetuning. When
  the class count differs the classifier head is re-initialised (as timm's pretrained loading
  does); any other mismatch (another model, stem, image size or stride) is refused.

Either way the checkpoint's content hash (SHA-256) is part of the new run's identity, so another
file is another run; its path is recorded in ``config.json`` (``start``) but not hashed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError
from reproduce.training.checkpoints import read_checkpoint, summarize
from reproduce.training.config import RunConfig, StartFrom, config_diff, neutralise_inert_keys

__all__ = ["checkpoint_file", "file_sha256", "resume_config", "initial_config", "fit_state",
           "load_initial"]


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

    from reproduce.training.runnable import build_model, num_classes

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

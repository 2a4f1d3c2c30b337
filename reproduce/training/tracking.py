"""Trackers people watch runs with: TensorBoard by default, MLflow and Weights & Biases on demand.

The recipe key ``log`` (``srv train --log``, ``srv ablate --log``) names them, comma-separated;
``none`` turns tracking off. Only rank 0 tracks. Each tracker uses its library's own API:

* **tensorboard** (torch's ``SummaryWriter``, as Lightning logs by default): event files in the
  run folder itself, so ``tensorboard --logdir runs`` shows every run and a grid's cells side by
  side, with the run's config as hparams (the HParams tab compares cells by their axes) and its
  final top-1. A resumed run opens its writer with ``purge_step`` = the checkpoint's step + 1:
  TensorBoard drops what an interrupted attempt logged past the checkpoint, so the curves go on
  without gaps or duplicates.
* **mlflow** (``MlflowClient``): ``$MLFLOW_TRACKING_URI`` or, offline by default, mlflow's local
  file store in ``<runs folder>/mlruns`` (``mlflow ui --backend-store-uri runs/mlruns``).
* **wandb**: ``wandb.init`` in the run folder, offline unless an API key (``WANDB_API_KEY``) or
  ``WANDB_MODE`` is set (compute nodes often have no internet; ``wandb sync`` uploads later).

MLflow and W&B keep their run ids in ``tracking.json`` in the run folder, so a resumed run
continues the same tracked run. They get per-epoch metrics (logged once the epoch's checkpoint
is written, so a resume never repeats one) and the final result; TensorBoard also gets every
step's loss, lr, gradient norm, update ratio and skipped flag, read from the engine's step window
when the engine reads it back anyway (no extra device syncs).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError
from reproduce.training.loop import StepRecord
from reproduce.training.runs import atomic_write_json, read_json

__all__ = ["Tracking", "open_tracking", "parse_log", "require_trackers", "TRACKING_FILE"]

TRACKING_FILE = "tracking.json"
#: tracker -> (module to import, the pyproject extra that installs it)
_PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"),
             "wandb": ("wandb", "wandb")}


def parse_log(spec: str) -> tuple[str, ...]:
    """The trackers a ``log`` value names (the recipe checked the names), in order."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    return tuple(dict.fromkeys(n for n in names if n != "none"))


def require_trackers(specs: str | Sequence[str]) -> None:
    """Refuse, before any training, trackers whose library is not installed (one line)."""
    for spec in [specs] if isinstance(specs, str) else specs:
        for name in parse_log(spec):
            module, extra = _PACKAGES[name]
            if importlib.util.find_spec(module) is None:
                raise SrvError(f"--log {name} needs the {module} package: pip install "
                               f"'srv-reproduce[{extra}]' (or leave {name} out of --log / the "
                               f"recipe's log key)")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _epoch_scalars(row: dict[str, Any]) -> dict[str, float]:
    """An epoch row of metrics.jsonl as tracker tags: val_* -> val/*, ema_* -> ema/*, the rest
    (train loss, gradient norms, spikes, throughput...) -> epoch/*."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if key == "step" or not _finite(value):
            continue
        head, _, rest = key.partition("_")
        tag = f"{head}/{rest}" if head in ("val", "ema") and rest else f"epoch/{key}"
        out[tag] = float(value)
    return out


def _final_scalars(result: dict[str, Any] | None) -> dict[str, float]:
    keys = ("top1", "top5", "ema_top1", "best_top1", "best_epoch")
    return {f"final/{k}": float(result[k]) for k in keys if result and _finite(result.get(k))}


def _hparam(value: Any) -> int | float | str | bool:
    return value if isinstance(value, int | float | str | bool) else str(value)


class _Tracker:
    """One tracker; every method is called on rank 0 only."""

    def steps(self, records: list[StepRecord], lr_of: Callable[[int], float]) -> None:
        pass

    def epoch(self, row: dict[str, Any]) -> None:
        pass

    def finish(self, status: str, result: dict[str, Any] | None) -> None:
        pass

    def close(self) -> None:
        pass


class _TensorBoard(_Tracker):
    def __init__(self, run_path: Path, config: dict[str, Any], step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        if step == 0:  # an attempt that never reached a checkpoint: its events are void
            for old in run_path.glob("events.out.tfevents.*"):
                old.unlink()
        self.writer = SummaryWriter(str(run_path), purge_step=step + 1 if step else None,
                                    flush_secs=30)
        if step == 0:  # the config as hparams; the final top-1 comes as a scalar at the end
            for summary in hparams({k: _hparam(v) for k, v in config.items()},
                                   {"final/top1": 0.0, "final/best_top1": 0.0}):
                self.writer.file_writer.add_summary(summary)  # type: ignore[union-attr]
        self.last_step = step

    def steps(self, records: list[StepRecord], lr_of: Callable[[int], float]) -> None:
        add = self.writer.add_scalar
        for rec in records:
            add("train/loss", rec.loss, rec.step)
            add("train/lr", lr_of(rec.step), rec.step)
            add("train/grad_norm", rec.grad_norm, rec.step)
            add("train/skipped", float(rec.skipped), rec.step)
            if rec.update_ratio is not None:
                add("train/update_ratio", rec.update_ratio, rec.step)
        if records:
            self.last_step = records[-1].step

    def epoch(self, row: dict[str, Any]) -> None:
        step = int(row.get("step", self.last_step))
        for tag, value in _epoch_scalars(row).items():
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()  # an epoch is worth seeing at once

    def finish(self, status: str, result: dict[str, Any] | None) -> None:
        for tag, value in _final_scalars(result).items():
            self.writer.add_scalar(tag, value, self.last_step)
        self.writer.add_text("status", status, self.last_step)

    def close(self) -> None:
        self.writer.close()


class _MLflow(_Tracker):
    def __init__(self, run_path: Path, config: dict[str, Any], ids: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # offline: mlflow's file store next to the runs (maintenance mode in 3.x)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (run_path.parent / "mlruns").resolve().as_uri()
        self.client = client = MlflowClient(uri)
        known = ids.get("mlflow") or {}
        self.run_id: str | None = known.get("run_id") if known.get("uri") == uri else None
        if self.run_id is not None:
            try:
                client.update_run(self.run_id, status="RUNNING")
            except MlflowException:
                self.run_id = None  # the store was moved or wiped: start a new tracked run
        if self.run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "srv")
            exp = client.get_experiment_by_name(name)
            try:
                exp_id = exp.experiment_id if exp else client.create_experiment(name)
            except MlflowException:  # another cell created it a moment ago
                exp_id = client.get_experiment_by_name(name).experiment_id  # type: ignore[union-attr]
            run = client.create_run(exp_id, run_name=run_path.name,
                                    tags={"srv.run_dir": str(run_path.resolve())})
            self.run_id = run.info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in config.items()]
            for i in range(0, len(params), 100):  # mlflow's log_batch takes 100 params a call
                client.log_batch(self.run_id, params=params[i:i + 100])
        self.ids = {"run_id": self.run_id, "uri": uri}

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k.replace("/", "_"), v, now, step) for k, v in values.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)  # type: ignore[arg-type]

    def epoch(self, row: dict[str, Any]) -> None:
        self._log(_epoch_scalars(row), int(row["epoch"]))

    def finish(self, status: str, result: dict[str, Any] | None) -> None:
        self._log(_final_scalars(result), int((result or {}).get("epochs") or 0))
        state = {"completed": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, status=state)  # type: ignore[arg-type]
        self.client.set_tag(self.run_id, "srv.status", status)  # type: ignore[arg-type]


class _WandB(_Tracker):
    def __init__(self, run_path: Path, config: dict[str, Any], ids: dict[str, Any]) -> None:
        import wandb

        online = os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE")
        run_id = (ids.get("wandb") or {}).get("run_id") or wandb.util.generate_id()
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "srv"), id=run_id,
                              resume="allow", name=run_path.name, dir=str(run_path),
                              config=config, mode=None if online else "offline")
        self.ids = {"run_id": run_id}

    def steps(self, records: list[StepRecord], lr_of: Callable[[int], float]) -> None:
        for rec in records:
            values = {"train/loss": rec.loss, "train/lr": lr_of(rec.step),
                      "train/grad_norm": rec.grad_norm, "train/skipped": float(rec.skipped)}
            if rec.update_ratio is not None:
                values["train/update_ratio"] = rec.update_ratio
            self.run.log(values, step=rec.step)

    def epoch(self, row: dict[str, Any]) -> None:
        self.run.log(_epoch_scalars(row), step=int(row["step"]))

    def finish(self, status: str, result: dict[str, Any] | None) -> None:
        self.run.summary.update({**_final_scalars(result), "status": status})
        self.run.finish(exit_code=0 if status in ("completed", "diverged") else 1)


class Tracking:
    """The run's trackers behind one interface; with none (``log = none``, or a rank other than
    0) every call does nothing. A tracker that raises while logging is dropped with a warning:
    a dashboard must not stop a training run."""

    def __init__(self, trackers: Sequence[_Tracker] = ()) -> None:
        self.trackers = list(trackers)
        self.finished = False
        #: seconds the training thread spent in the trackers' calls (``srv bench`` reports
        #: it as a share of the step time: the cost of tracking, measured directly)
        self.seconds = 0.0

    def _each(self, what: str, *args: Any) -> None:
        start = time.perf_counter()
        try:
            self._call_each(what, *args)
        finally:
            self.seconds += time.perf_counter() - start

    def _call_each(self, what: str, *args: Any) -> None:
        for tracker in list(self.trackers):
            try:
                getattr(tracker, what)(*args)
            except Exception as err:  # noqa: BLE001 - reported, and training goes on
                print(f"warning: {type(tracker).__name__.strip('_').lower()} tracking "
                      f"stopped ({type(err).__name__}: {err})", file=sys.stderr)
                self.trackers.remove(tracker)

    def steps(self, records: list[StepRecord], lr_of: Callable[[int], float]) -> None:
        """Steps the engine just read back from the device; ``lr_of(step)`` gives their lr."""
        if self.trackers:
            self._each("steps", records, lr_of)

    def epoch(self, row: dict[str, Any]) -> None:
        """A finished epoch's row of ``metrics.jsonl`` (after its checkpoint is written)."""
        if self.trackers:
            self._each("epoch", row)

    def finish(self, status: str, result: dict[str, Any] | None = None) -> None:
        """The run ended: ``completed`` (with its result), ``diverged``, ``failed``."""
        if not self.finished:
            self.finished = True
            self._each("finish", status, result)

    def close(self) -> None:
        self._each("close")
        self.trackers = []

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 *_: Any) -> None:
        """An exception ends the run as its ``status`` attribute says (the engine's divergence
        says ``diverged``), as ``interrupted`` (Ctrl-C) or ``failed``."""
        if kind is not None:
            status = getattr(err, "status", None)
            self.finish(status if isinstance(status, str) else
                        "interrupted" if issubclass(kind, KeyboardInterrupt) else "failed")
        self.close()


def open_tracking(spec: str, run_path: Path, config: dict[str, Any], step: int,
                  is_main: bool = True) -> Tracking:
    """Open the trackers ``spec`` names for the run in ``run_path``, continuing at optimizer
    step ``step`` (0: a fresh run); their run ids go to ``tracking.json``. The caller has
    checked the libraries (:func:`require_trackers`: ``engine.train``, ``srv ablate``,
    ``srv bench``), before any data."""
    names = parse_log(spec)
    if not is_main or not names:
        return Tracking()
    ids: dict[str, Any] = read_json(run_path / TRACKING_FILE) or {}
    trackers: list[_Tracker] = []
    for name in names:
        if name == "tensorboard":
            trackers.append(_TensorBoard(run_path, config, step))
        else:
            tracker = (_MLflow if name == "mlflow" else _WandB)(run_path, config, ids)
            ids[name] = tracker.ids
            trackers.append(tracker)
    if set(names) - {"tensorboard"}:
        atomic_write_json(run_path / TRACKING_FILE, ids)
    return Tracking(trackers)


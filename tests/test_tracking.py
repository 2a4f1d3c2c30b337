"""Trackers on a real mini run (digits): TensorBoard's event files read back with TensorBoard's
own reader, MLflow's store read back with MLflow's client, and a run interrupted mid-epoch that
resumes without gaps or duplicates in either."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY, tiny_args, train_until_killed
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.training import tracking
from reproduce.training.config import resolve_config
from reproduce.training.engine import train

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None
runner = CliRunner()
#: 4 steps an epoch, read back every 2 steps (so the interrupted epoch logged steps 5 and 6)
SETTINGS = {**TINY, "train_subset": 128, "batch_size": 32, "val_subset": 50, "sync_every": 2,
            "log": "tensorboard,mlflow" if HAS_MLFLOW else "tensorboard"}


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run killed after step 6 (mid epoch 2, its checkpoint at step 4), then resumed."""
    runs_root = tmp_path_factory.mktemp("runs")
    cfg = resolve_config("vit-mini-conv", "mini", SETTINGS)
    run_dir = train_until_killed(cfg, runs_root)
    first_ids = json.loads((run_dir / "tracking.json").read_text()) if HAS_MLFLOW else {}
    outcome = train(cfg, runs_root, progress=False)
    assert outcome.status == "completed"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"run_dir": run_dir, "result": outcome.result, "rows": rows, "ids": first_ids,
            "cfg": cfg}


def _events(run_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return acc


def test_tensorboard_events_continue_across_a_resume(resumed: dict[str, Any]) -> None:
    acc = _events(resumed["run_dir"])
    assert len(list(resumed["run_dir"].glob("events.out.tfevents.*"))) == 2  # two sessions
    loss = acc.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 9))  # no gap, no duplicate at step 5
    rows = resumed["rows"]
    for epoch, steps in ((1, range(0, 4)), (2, range(4, 8))):
        mean = sum(loss[i].value for i in steps) / 4
        assert mean == pytest.approx(rows[epoch - 1]["train_loss"], rel=1e-5)
    lr = {e.step: e.value for e in acc.Scalars("train/lr")}
    assert lr[1] == pytest.approx(rows[0]["lr"]) and lr[5] == pytest.approx(rows[1]["lr"])
    norms = [e.value for e in acc.Scalars("train/grad_norm")]
    assert max(norms[4:]) == pytest.approx(rows[1]["grad_norm_max"], rel=1e-5)
    top1 = acc.Scalars("val/top1")
    assert [(e.step, e.value) for e in top1] == [
        (4, pytest.approx(rows[0]["val_top1"])), (8, pytest.approx(rows[1]["val_top1"]))]
    assert acc.Scalars("final/top1")[-1].value == pytest.approx(resumed["result"]["top1"])


def test_tensorboard_hparams_hold_the_config(resumed: dict[str, Any]) -> None:
    from tensorboard.plugins.hparams import plugin_data_pb2

    content = _events(resumed["run_dir"]).PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    cfg = resumed["cfg"]
    assert start.hparams["model"].string_value == "vit-mini-conv"
    assert start.hparams["hash"].string_value == cfg.hash
    assert start.hparams["batch_size"].number_value == 32
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/experiment"]).experiment
    assert "final/top1" in [m.name.tag for m in experiment.metric_infos]


@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow is not installed (pip install "
                                           "'srv-reproduce[mlflow]')")
def test_mlflow_run_is_continued_after_a_resume(resumed: dict[str, Any]) -> None:
    from mlflow.tracking import MlflowClient

    ids = json.loads((resumed["run_dir"] / "tracking.json").read_text())
    assert ids["mlflow"] == resumed["ids"]["mlflow"]  # the same tracked run
    assert ids["mlflow"]["uri"] == (resumed["run_dir"].parent / "mlruns").resolve().as_uri()
    client = MlflowClient(ids["mlflow"]["uri"])
    run = client.get_run(ids["mlflow"]["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model"] == "vit-mini-conv"
    assert run.data.params["hash"] == resumed["cfg"].hash
    history = client.get_metric_history(run.info.run_id, "val_top1")
    assert [(m.step, m.value) for m in history] == [
        (r["epoch"], pytest.approx(r["val_top1"])) for r in resumed["rows"]]
    assert run.data.metrics["final_top1"] == pytest.approx(resumed["result"]["top1"])
    runs = client.search_runs([run.info.experiment_id])
    assert len(runs) == 1  # the resume did not start a second run


def test_log_none_writes_no_tracker_files(tmp_path: Path) -> None:
    cfg = resolve_config("vit-mini-conv", "mini", {**SETTINGS, "log": "none"})
    with tracking.open_tracking(cfg.recipe.log, tmp_path, cfg.to_dict(), 0) as tracker:
        assert tracker.trackers == []
    assert list(tmp_path.iterdir()) == []
    assert cfg.hash == resolve_config("vit-mini-conv", "mini", SETTINGS).hash  # not identity


def test_missing_tracker_library_is_one_line_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else find_spec(name, *a))
    result = runner.invoke(app, ["train", "vit-mini-conv", "--runs-dir", str(tmp_path),
                                 "--log", "tensorboard,wandb", *tiny_args()])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "srv: error: --log wandb needs the wandb package: pip install 'srv-reproduce[wandb]' "
        "(or leave wandb out of --log / the recipe's log key)"]
    assert not tmp_path.exists() or not list(tmp_path.iterdir())  # nothing started


@pytest.mark.parametrize("spec", ["tensorbord", "none,mlflow", ""])
def test_unknown_tracker_is_refused(tmp_path: Path, spec: str) -> None:
    result = runner.invoke(app, ["train", "vit-mini-conv", "--runs-dir", str(tmp_path),
                                 "--log", spec, *tiny_args()])
    assert result.exit_code == 2
    assert "recipe key 'log'" in result.stderr and "tensorboard, mlflow, wandb" in result.stderr


def test_time_in_the_trackers_calls_is_counted() -> None:
    """srv bench's 'in trackers' share: the seconds the training thread spent in the calls,
    including a tracker that raised and was dropped."""
    from reproduce.training.tracking import Tracking

    class Slow:
        def steps(self, *_: Any) -> None:
            time.sleep(0.05)

        def epoch(self, *_: Any) -> None:
            time.sleep(0.05)
            raise OSError("disk full")

    tracking = Tracking([Slow()])  # type: ignore[list-item]
    tracking.steps([], lambda step: 0.0)
    assert 0.05 <= tracking.seconds < 0.5
    tracking.epoch({"epoch": 1})
    assert tracking.seconds >= 0.1 and tracking.trackers == []
    tracking.steps([], lambda step: 0.0)  # no trackers left: nothing more
    assert tracking.seconds < 0.5

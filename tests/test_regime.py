"""Issue 28's regime criterion (reproduce/report/regime.py) on hand-written values, and
scripts/regime_criterion.py on hand-written runs of the stem grid's regime-cal preset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_tables import write_run

from reproduce.recipes.grids import load_grid
from reproduce.report.regime import Setting, cheapest, judge, settings_of

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))


def test_the_criterion_on_hand_written_settings() -> None:
    ok = judge(Setting("a", 50_000, (84.0, 85.0, 86.0), (88.0, 89.0, 90.0), 2000))
    assert ok.meets and ok.reasons == () and ok.gap == pytest.approx(4.0)
    edge = judge(Setting("edge", 1, (85.0,), (90.0,), 1000))  # exactly 5 points, 1,000 images
    assert edge.meets
    far = judge(Setting("far", 1, (42.0, 43.0), (90.0, 90.0), 2000))
    assert not far.meets and far.reasons == ("patchify 47.5 points below the conv-stem (> 5)",)
    ceiling = judge(Setting("ceiling", 1, (96.0,), (97.5,), 10_000))
    assert ceiling.reasons == ("conv-stem error 2.5 points (< 3: at the ceiling)",)
    small = judge(Setting("digits", 1, (90.0,), (92.0,), 360))
    assert small.reasons == ("360 val images (< 1,000)",)
    partial = judge(Setting("partial", 1, (85.0,), (), 2000, unfinished=3))
    assert partial.reasons == ("3 run(s) unfinished", "no finished run of conv")


def test_the_cheapest_setting_that_meets_it_is_chosen() -> None:
    settings = [Setting("big", 100_000, (86.0,), (88.0,), 2000),
                Setting("cheap-but-apart", 10_000, (70.0,), (88.0,), 2000),
                Setting("mid", 50_000, (84.0,), (87.0,), 2000),
                Setting("mid-too", 50_000, (85.0,), (87.0,), 2000)]
    best = cheapest([judge(s) for s in settings])
    assert best is not None and best.setting.label == "mid"
    assert cheapest([judge(settings[1])]) is None


def test_diverged_runs_count_at_chance_and_unfinished_ones_block() -> None:
    rows = [{"setting": "s", "stem": "patch", "cost": 9, "status": "diverged", "top1": None,
             "n_val": None, "num_classes": 10},
            {"setting": "s", "stem": "patch", "cost": 9, "status": "done", "top1": 80.0,
             "n_val": 2000, "num_classes": 10},
            {"setting": "s", "stem": "conv", "cost": 9, "status": "pending", "top1": None,
             "n_val": None, "num_classes": 10},
            {"setting": "t", "stem": "conv", "cost": 5, "status": "done", "top1": 90.0,
             "n_val": 1500, "num_classes": 10}]
    s, t = settings_of(rows)
    assert s.patch == (10.0, 80.0) and s.conv == () and s.unfinished == 1 and s.n_val == 2000
    assert (t.label, t.cost, t.conv, t.n_val) == ("t", 5, (90.0,), 1500)


def test_the_script_reads_a_calibration_and_names_the_regime_scale(tmp_path: Path) -> None:
    """Two settings finished (5,000 and 10,000 train images, 5 epochs, batch 64): the cheaper one
    leaves patchify 8 points behind, the other meets the criterion and is chosen; every other
    setting is unfinished."""
    import regime_criterion

    runs = tmp_path / "runs"
    top1 = {("5000", "patch"): 80.0, ("5000", "conv"): 88.0,
            ("10000", "patch"): 85.0, ("10000", "conv"): 88.5}
    grid = load_grid("stem", "regime-cal", axes={"train": ["5000", "10000"], "epochs": ["5"],
                                                 "batch": ["64"]})
    for cell in grid.cells():
        value = top1[(cell.label_dict["train"], cell.label_dict["stem"])] + cell.seed - 301
        run = write_run(runs, cell.model, cell.override_dict, "done", value, seed=cell.seed,
                        recipe=cell.recipe)
        result = json.loads((run / "result.json").read_text())
        (run / "result.json").write_text(json.dumps({**result, "n_val": 2000}))
    out = tmp_path / "regime.json"
    assert regime_criterion.main(["--runs-dir", str(runs), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["chosen"] == "train=10000 epochs=5 batch=64" and data["seeds"] == [300, 301, 302]
    by_label = {s["label"]: s for s in data["settings"]}
    assert len(by_label) == 4
    assert by_label["train=5000 epochs=5 batch=64"]["reasons"] == [
        "patchify 8.0 points below the conv-stem (> 5)"]
    chosen = by_label["train=10000 epochs=5 batch=64"]
    assert chosen["cost"] == 49_920 and chosen["patch"] == [84.0, 85.0, 86.0]
    assert by_label["train=5000 epochs=5 batch=32"]["reasons"][0] == "6 run(s) unfinished"
    assert regime_criterion.main(["--runs-dir", str(tmp_path / "none")]) == 1


def test_the_shipped_calibration_chose_the_regime_recipe() -> None:
    """Issue 28 (1): the criterion holds in the shipped calibration records at the setting
    recipes/fmnist.toml trains, and no cheaper calibrated setting meets it."""
    from conftest import REPO

    from reproduce.recipes.recipe import load_recipe
    from reproduce.records import load_records

    rows = []
    for name in ("stem-regime-cal.jsonl", "stem-regime-cal-2.jsonl"):
        for rec in load_records(REPO / "results" / name):
            c = rec.cell
            train, batch, epochs = int(c["train"]), int(c["batch"]), int(c["epochs"])
            rows.append({"setting": f"train={train} epochs={epochs} batch={batch}",
                         "stem": c["stem"], "cost": train // batch * batch * epochs,
                         "status": rec.result.status, "top1": rec.result.top1,
                         "n_val": rec.result.n_val, "num_classes": 10})
    verdicts = [judge(s) for s in settings_of(rows)]
    chosen = cheapest(verdicts)
    assert chosen is not None and chosen.meets
    recipe, _ = load_recipe("fmnist")
    assert chosen.setting.label == (f"train={recipe.train_subset} epochs={recipe.epochs} "
                                    f"batch={recipe.batch_size}")
    assert chosen.gap is not None and 0 < chosen.gap <= 5 and chosen.conv_mean <= 97
    assert not any(v.meets for v in verdicts if v.setting.cost < chosen.setting.cost)
    assert len(chosen.setting.patch) == len(chosen.setting.conv) == 3

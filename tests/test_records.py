"""Run records: typed, versioned JSON Lines; a bad file is one line naming the file and line;
a runs folder exports to records that rebuild the same table as the runs folder itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_tables import tables_env  # noqa: F401 (a fixture)
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.errors import SrvError
from reproduce.records import (
    SCHEMA_VERSION,
    Environment,
    EpochRow,
    RunRecord,
    RunResult,
    Settings,
    load_records,
    read_records,
    write_records,
)

runner = CliRunner()


def _record(seed: int = 100, stem: str = "conv", top1: float = 90.0) -> RunRecord:
    return RunRecord(
        grid="stem", preset="quick", cell={"stem": stem}, seed=seed,
        run=f"vit-mini-{stem}-{seed:012d}",
        settings=Settings(model=f"vit-mini-{stem}", recipe="mini", stem="", dataset="digits",
                          img_size=32, num_classes=10, stem_width=0, epochs=8, opt="adamw",
                          lr=1e-3, weight_decay=0.05, warmup_epochs=3.0,
                          config_hash=f"{seed:012d}"),
        result=RunResult(status="done", epoch=8, top1=top1, best_top1=top1 + 0.5, n_val=360,
                         finished="2026-12-07T06:00:00+0000", erank=30.0, erank_untrained=20.0),
        env=Environment(git_commit="d605fcc4e323fc8ede82cd18f8334048f65126bf", git_dirty=False,
                        code_version="0.1.0", device="cpu", world_size=1),
        curve=[EpochRow(1, 50.0, 2.0), EpochRow(8, top1, 0.9)])


def test_records_round_trip_one_file_per_grid_and_preset(tmp_path: Path) -> None:
    recs = [_record(101), _record(100), _record(100, "patch", 42.0)]
    (path,) = write_records(tmp_path, recs)
    assert path.name == "stem-quick.jsonl"
    lines = path.read_text().splitlines()
    assert json.loads(lines[0])["schema_version"] == SCHEMA_VERSION
    back = read_records(path)
    assert sorted(back, key=lambda r: (r.cell["stem"], r.seed)) == \
        sorted(recs, key=lambda r: (r.cell["stem"], r.seed))
    first = path.read_bytes()
    write_records(tmp_path, reversed(recs))  # the same records give the same bytes
    assert path.read_bytes() == first
    assert load_records(tmp_path) == back


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: {**d, "schema_version": 99}, ":1: schema_version 99 is not 1"),
    (lambda d: {k: v for k, v in d.items() if k != "seed"}, ":1: missing field 'seed'"),
    (lambda d: {**d, "settings": {k: v for k, v in d["settings"].items() if k != "model"}},
     ":1: missing field settings.'model'"),
    (lambda d: {**d, "colour": "red"}, ":1: unknown field 'colour'"),
])
def test_a_bad_record_names_the_file_and_line(tmp_path: Path, change, message) -> None:  # noqa: ANN001
    good = _record().to_dict()
    path = tmp_path / "stem-quick.jsonl"
    path.write_text(json.dumps(change(good)) + "\n")
    with pytest.raises(SrvError, match=f"stem-quick.jsonl{message}"):
        read_records(path)


def test_a_truncated_line_is_one_error_line_exit_2(tmp_path: Path) -> None:
    text = json.dumps(_record(100).to_dict()) + "\n" + json.dumps(_record(101).to_dict())[:80]
    (tmp_path / "stem-quick.jsonl").write_text(text + "\n")
    for args in (["claims", "--records", str(tmp_path), "--no-write"],
                 ["table", "stem", "--records", str(tmp_path), "--no-write"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.stderr.count("\n") == 1
        assert "srv: error:" in result.stderr and "stem-quick.jsonl:2: not a JSON record" \
            in result.stderr


def test_records_of_a_runs_folder_rebuild_its_table(tmp_path: Path,
                                                    tables_env: Path) -> None:  # noqa: F811
    """srv export, then srv table --records: the same table as srv table on the runs folder,
    without the runs folder."""
    from test_claims import QUICK, write_grid_runs

    runs = tmp_path / "runs"
    write_grid_runs(runs, "stem", "quick", QUICK, seeds=[100, 101, 102])
    direct = runner.invoke(app, ["table", "stem", "--preset", "quick", "--runs-dir", str(runs),
                                 "--no-flops", "--no-plot", "--tables-dir", str(tmp_path / "a")])
    assert direct.exit_code == 0, direct.output
    out = runner.invoke(app, ["export", "stem", "--runs-dir", str(runs), "--out",
                              str(tmp_path / "rec"), "--no-diversity"])
    assert out.exit_code == 0, out.output
    assert "stem-quick.jsonl (12 runs)" in out.output  # 4 stems x 3 seeds, each run once
    import shutil

    shutil.rmtree(runs)
    rebuilt = runner.invoke(app, ["table", "stem", "--preset", "quick", "--records",
                                  str(tmp_path / "rec"), "--no-flops", "--no-plot",
                                  "--tables-dir", str(tmp_path / "b")])
    assert rebuilt.exit_code == 0, rebuilt.output
    name = "stem-quick.md"  # the preset's seeds 100-103, seed 103 pending in both
    assert (tmp_path / "b" / name).read_text() == (tmp_path / "a" / name).read_text()


def test_outputs_go_under_the_runs_folder_by_default(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A user's run never writes into the current folder's tables/ (a clone's shipped ones)."""
    from test_claims import QUICK, write_grid_runs

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SRV_TABLES_DIR", raising=False)
    write_grid_runs(tmp_path / "runs", "stem", "quick", QUICK, seeds=[100, 101, 102, 103])
    for args in (["table", "stem", "--preset", "quick", "--no-flops"],
                 ["claims", "--no-diversity"]):
        assert runner.invoke(app, args).exit_code == 0
    assert not (tmp_path / "tables").exists()
    assert (tmp_path / "runs" / "tables" / "stem-quick.md").exists()
    text = (tmp_path / "runs" / "tables" / "claims.md").read_text()
    assert "checked against the finished runs in runs:" in text
    assert str(tmp_path) not in text

"""``tables/reference/*.csv``: the published numbers, joinable with our catalogue by ``model``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from reproduce.errors import SrvError
from reproduce.models import CATALOGUE, create, get_entry
from reproduce.report.reference import (
    ENV_TABLES_DIR,
    load_reference,
    reference_dir,
    reference_names,
    tables_dir,
)

EXPECTED = ["deit", "wang2022", "xiao2021_complexity", "xiao2021_error", "xiao2021_stem_norm"]


def n_params(name: str, **kwargs) -> int:
    with torch.device("meta"):
        model = create(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def test_default_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Published numbers come with srv (here: the checkout's tables/reference/); tables are
    written under the current directory, wherever srv is installed."""
    monkeypatch.delenv(ENV_TABLES_DIR, raising=False)
    monkeypatch.chdir(tmp_path)
    assert tables_dir() == tmp_path / "tables"
    assert reference_dir() == Path(__file__).resolve().parent.parent / "tables" / "reference"
    assert reference_names() == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_every_table_has_models_and_sources(name: str) -> None:
    df = load_reference(name)
    assert {"model", "source"} <= set(df.columns)
    assert set(df["model"]) <= set(CATALOGUE), set(df["model"]) - set(CATALOGUE)
    assert df["source"].notna().all() and (df["source"].str.len() > 10).all()


def test_wang2022_is_never_invented() -> None:
    """Wang et al.'s tables were not available: the file ships with its header only. A user who
    adds numbers must give every row a source (checked above)."""
    df = load_reference("wang2022.csv")
    assert {"model", "stem", "top1", "top1_err", "params_m", "gflops", "source"} <= set(df.columns)
    if len(df) == 0:
        assert (reference_dir() / "wang2022.csv").read_text().count("\n") == 1


def test_deit_matches_catalogue() -> None:
    df = load_reference("deit").set_index("model")
    assert list(df["top1"]) == [72.2, 79.8, 81.8]
    assert list(df["gflops"]) == [1.3, 4.6, 17.6]
    for model, row in df.iterrows():
        entry = get_entry(model)
        assert (entry.embed_dim, entry.depth, entry.num_heads) == (
            row["embed_dim"], row["depth"], row["heads"])
        assert round(n_params(model) / 1e6, 2) == row["params_m_exact"]


def test_xiao_complexity_matches_catalogue() -> None:
    df = load_reference("xiao2021_complexity")
    assert len(df) == 8
    for row in df.itertuples():
        entry = get_entry(row.model)
        assert (entry.embed_dim, entry.mlp_ratio, entry.num_heads, entry.depth) == (
            row.width, row.mlp_ratio, row.heads, row.blocks)
        assert round(n_params(row.model) / 1e6, 2) == row.params_m_exact
        # the printed values are roundings (ViT_P-18GF's 86.7 is the loosest; 86.6 in Table 2)
        assert abs(row.params_m - row.params_m_exact) <= 0.15
        assert abs(row.gflops - row.gflops_exact) <= 0.15


def test_xiao_error_is_long_form() -> None:
    df = load_reference("xiao2021_error")
    assert len(df) == 24
    assert set(df["epochs"]) == {100, 200, 400}
    assert df.groupby("model").size().eq(3).all()
    wide = df.pivot(index="model", columns="epochs", values="top1_err")
    assert wide.loc["vitc-4gf"].tolist() == [20.9, 19.2, 18.6]
    assert (wide[100] > wide[400]).all()  # longer training helps every model


def test_stem_norm_variants_build() -> None:
    df = load_reference("xiao2021_stem_norm")
    assert list(df["top1_err"]) == [23.2, 23.3, 20.9, 21.1]
    for row in df.itertuples():
        with torch.device("meta"):
            model = create(row.model, stem=row.stem)
        kinds = {type(m).__name__ for m in model.patch_embed.modules()}
        norms = kinds & {"BatchNorm2d", "LayerNorm2d"}
        expect = {"patch": set(), "patch-bnrelu": {"BatchNorm2d"}}.get(
            row.stem, {"LayerNorm2d"} if "norm=ln" in row.stem else {"BatchNorm2d"})
        assert norms == expect, (row.stem, norms)
        assert ("ReLU" in kinds) == (row.stem != "patch")


def test_env_override_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "mine.csv").write_text("model,source\nvit-s-conv,me 2026 Table 1\n")
    (tmp_path / "reference" / "bad.csv").write_text("model,top1\nvit-s-conv,80\n")
    (tmp_path / "reference" / "deit.csv").write_text("model,top1,source\nvit-t-patch,1,me\n")
    monkeypatch.setenv(ENV_TABLES_DIR, str(tmp_path))
    assert tables_dir() == tmp_path
    # the user's CSVs add to the shipped ones, and replace a shipped one of the same name
    assert reference_names() == sorted({*EXPECTED, "bad", "mine"})
    assert load_reference("mine")["source"].tolist() == ["me 2026 Table 1"]
    assert load_reference("deit")["top1"].tolist() == [1]
    assert len(load_reference("xiao2021_complexity")) == 8
    with pytest.raises(SrvError, match="source"):
        load_reference("bad")
    with pytest.raises(SrvError, match="available: bad, deit, mine"):
        load_reference("nope")

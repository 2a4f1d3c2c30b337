"""srv analyze: token-diversity metrics against hand computations, determinism, stem BN scales,
stability summaries, plots written, and exit 2 on bad input.

One module-scoped tiny grid (digits 16x16, one epoch, a few seconds per run) holds a trained
patchify and a trained conv-stem run, plus a hand-written diverged run without a checkpoint.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import conftest
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from reproduce.analysis.diversity import (
    Diversity,
    diversity_tables,
    effective_rank,
    fixed_images,
    image_indices,
    mean_cosine_similarity,
    singular_values,
    token_diversity,
)
from reproduce.analysis.stem_bn import stem_bn_stats
from reproduce.analysis.targets import TargetSpec, resolve_target
from reproduce.cli import app
from reproduce.errors import SrvError

runner = CliRunner()

TINY = {**conftest.TINY, "epochs": 1, "warmup_epochs": 0.5}  # one epoch is enough here

GRID = """
title = "Stem (analysis test)"
[axes.stem]
key = "model"
format = "vit-mini-{value}"
values = ["patch", "conv", "conv-nobn"]
labels = { patch = "patchify", conv = "conv, BN + ReLU", conv-nobn = "conv, ReLU only" }
[presets.mini]
recipe = "mini"
seeds = [0]
set = { SET }
""".replace("SET", ", ".join(f"{k} = {v}" for k, v in TINY.items()))


# --- the metrics on hand-made token matrices -----------------------------------------------------


def _direct_cosine(x: np.ndarray) -> float:
    n = len(x)
    total = 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j]))
    return total / (n * (n - 1))


def _direct_erank(x: np.ndarray, centre: bool = False) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if centre:
        x = x - x.mean(axis=0)
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def test_identical_tokens_have_cosine_one_and_rank_one() -> None:
    x = torch.tensor([[1.0, 2.0, -3.0]]).repeat(5, 1)
    assert mean_cosine_similarity(x).item() == pytest.approx(1.0, abs=1e-12)
    assert effective_rank(x).item() == pytest.approx(1.0, abs=1e-6)
    # scaled copies point the same way: still one direction
    assert effective_rank(x * torch.arange(1, 6.0)[:, None]).item() == pytest.approx(1.0,
                                                                                      abs=1e-6)


def test_orthogonal_tokens_have_cosine_zero_and_full_rank() -> None:
    x = torch.zeros(4, 6)
    for i, scale in enumerate([1.0, 3.0, 0.5, 7.0]):  # norms differ; directions orthogonal
        x[i, i + 1] = scale
    assert mean_cosine_similarity(x).item() == pytest.approx(0.0, abs=1e-12)
    assert effective_rank(x).item() == pytest.approx(4.0, rel=1e-12)
    # opposite pairs: cosine -1 for 2 of the 12 ordered pairs
    y = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert mean_cosine_similarity(y).item() == pytest.approx(-4 / 12)
    assert effective_rank(y).item() == pytest.approx(2.0)


def test_metrics_match_a_direct_computation_on_a_small_matrix() -> None:
    x = np.array([[1.0, 0.5, -0.2, 0.0], [0.3, -1.0, 0.8, 0.1], [0.9, 0.4, 0.0, -0.7],
                  [-0.2, 0.1, 0.6, 0.6], [0.5, 0.5, 0.5, 0.5]])
    t = torch.tensor(x, dtype=torch.float32)
    assert mean_cosine_similarity(t).item() == pytest.approx(_direct_cosine(x), rel=1e-6)
    assert effective_rank(t).item() == pytest.approx(_direct_erank(x), rel=1e-6)
    assert effective_rank(t, centre=True).item() == pytest.approx(
        _direct_erank(x, centre=True), rel=1e-6)
    # a batch is the per-image metric of each matrix
    batch = torch.stack([t, t.flip(1), 2 * t])
    cos = mean_cosine_similarity(batch)
    assert cos.shape == (3,)
    assert cos[1].item() == pytest.approx(_direct_cosine(x[:, ::-1]), rel=1e-6)
    assert cos[2].item() == pytest.approx(cos[0].item(), rel=1e-12)  # scale-free


def test_singular_values_match_an_svd() -> None:
    g = torch.Generator().manual_seed(0)
    for shape in [(3, 5, 8), (3, 8, 5), (2, 6, 6)]:
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        ours = singular_values(x).flip(-1)  # ascending eigenvalues -> descending
        assert torch.allclose(ours, torch.linalg.svdvals(x), rtol=1e-9, atol=1e-12)
    low = torch.randn(7, 2, generator=g, dtype=torch.float64) @ torch.randn(
        2, 9, generator=g, dtype=torch.float64)  # rank 2: the other values are exactly 0
    assert (singular_values(low) > 0).sum().item() == 2


def test_degenerate_token_matrices() -> None:
    assert effective_rank(torch.zeros(3, 4)).item() == 0.0
    z = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])  # a zero token: cosine 0 with all
    assert mean_cosine_similarity(z).item() == pytest.approx(2 / 6)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        mean_cosine_similarity(torch.ones(1, 4))


def test_image_indices_are_evenly_spread() -> None:
    assert image_indices(10, 20) == list(range(10))
    assert image_indices(360, 4) == [0, 90, 180, 270]
    idx = image_indices(360, 256)
    assert len(idx) == len(set(idx)) == 256 and idx[0] == 0 and idx[-1] < 360
    with pytest.raises(SrvError):
        image_indices(10, 0)


# --- a model -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def untrained() -> tuple[torch.nn.Module, torch.Tensor]:
    spec = resolve_target("vit-mini-conv", overrides={"img_size": 16})
    images, num_classes, _ = fixed_images(spec.recipe(), 24)
    model = spec.load(num_classes=num_classes)
    return model, images


def test_diversity_is_deterministic_and_matches_the_tokens_directly(untrained) -> None:
    model, images = untrained
    model.train()  # the measurement switches to eval and back
    first = token_diversity(model, images, batch_size=10)
    second = token_diversity(model, images, batch_size=24)
    assert model.training
    assert first.layers == ["stem", *[f"block {i}" for i in range(1, 7)]]
    assert (first.n_images, first.n_tokens, first.dim) == (24, 16, 96)
    assert first.cosine == pytest.approx(second.cosine, rel=1e-9)
    assert first.erank == pytest.approx(second.erank, rel=1e-9)
    assert token_diversity(model, images, batch_size=10).cosine == first.cosine  # bitwise
    model.eval()
    with torch.no_grad():
        stem = model.patch_embed(images)
        last = model.forward_intermediates(images, indices=[5], output_fmt="NLC",
                                           intermediates_only=True)[0]
    assert last.shape == (24, 16, 96)  # class token dropped by timm too
    assert first.cosine[0] == pytest.approx(mean_cosine_similarity(stem).mean().item(),
                                            rel=1e-9)
    assert first.erank[-1] == pytest.approx(effective_rank(last).mean().item(), rel=1e-9)
    assert first.cosine[-1] == pytest.approx(mean_cosine_similarity(last).mean().item(),
                                             rel=1e-9)
    assert all(1.0 <= e <= 16.0 for e in first.erank)


def test_untrained_model_is_seeded(untrained) -> None:
    _, images = untrained
    spec = resolve_target("vit-mini-conv", overrides={"img_size": 16}, seed=0)
    other = resolve_target("vit-mini-conv", overrides={"img_size": 16}, seed=1)
    a = token_diversity(spec.load(num_classes=10), images[:8])
    b = token_diversity(spec.load(num_classes=10), images[:8])
    c = token_diversity(other.load(num_classes=10), images[:8])
    assert a.cosine == b.cosine and a.cosine != c.cosine


def test_stem_bn_stats_of_an_untrained_conv_stem(untrained) -> None:
    model, _ = untrained
    layers = stem_bn_stats(model)
    assert [bn.name for bn in layers] == [f"patch_embed.stem.{i}.norm" for i in range(3)]
    stats = layers[0].stats()
    assert stats["channels"] == 32 and stats["mean"] == 1.0 and stats["frac_small"] == 0.0
    model.patch_embed.stem[1].norm.weight.data[:8] = 0.05
    stats = stem_bn_stats(model)[1].stats()
    assert stats["frac_small"] == pytest.approx(8 / 32) and stats["min"] == pytest.approx(0.05)
    model.patch_embed.stem[1].norm.weight.data.fill_(1.0)
    patch = resolve_target("vit-mini-patch", overrides={"img_size": 16}).load(num_classes=10)
    with pytest.raises(SrvError, match="no BatchNorm"):
        stem_bn_stats(patch, "vit-mini-patch")


# --- the tiny grid: two trained runs and a diverged one ------------------------------------------


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from reproduce.experiments.cells import plan
    from reproduce.recipes.grids import load_grid
    from reproduce.training.engine import train

    root = tmp_path_factory.mktemp("analysis")
    grid_path = root / "tinystem.toml"
    grid_path.write_text(GRID)
    runs = root / "runs"
    states = plan(load_grid(grid_path), runs)
    dirs = {}
    for st in states:
        stem = st.cell.label_dict["stem"]
        if stem == "conv-nobn":  # diverged in epoch 2, by hand: no checkpoint
            st.run_dir.mkdir(parents=True)
            (st.run_dir / "config.json").write_text(json.dumps(st.cfg.to_dict()))
            (st.run_dir / "metrics.jsonl").write_text(json.dumps(
                {"epoch": 1, "grad_norm_mean": 2.0, "grad_norm_max": 50.0, "loss_spikes": 3,
                 "max_update_ratio": 0.25, "val_top1": 12.0, "train_loss": 2.3}) + "\n")
            (st.run_dir / "status.json").write_text(json.dumps(
                {"status": "diverged", "epoch": 2, "step": 5, "reason": "non-finite loss"}))
        else:
            assert train(st.cfg, runs, progress=False).status == "completed"
        dirs[stem] = st.run_dir
    return {"grid": grid_path, "runs": runs, **dirs}


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_diversity_of_a_grid_on_one_plot(grid_runs, tmp_path: Path) -> None:
    out = tmp_path / "div.png"
    args = ["analyze", "diversity", "--grid", str(grid_runs["grid"]), "--runs-dir",
            str(grid_runs["runs"]), "--images", "32", "--format", "json", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert "skipped conv, ReLU only (seed 0): diverged, no last.pt" in result.stderr
    assert [t["label"] for t in record["targets"]] == ["patchify", "conv, BN + ReLU"]
    for t in record["targets"]:
        assert [layer["layer"] for layer in t["layers"]][:2] == ["stem", "block 1"]
        assert len(t["layers"]) == 7 and t["n_images"] == 32 and t["status"] == "done"
        assert t["weights"] == "last" and t["epoch"] == 1
        assert all(-1 <= layer["cosine"] <= 1 and 1 <= layer["erank"] <= 16
                   for layer in t["layers"])
    assert out.stat().st_size > 20_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = out.with_suffix(".md").read_text()
    assert "| patchify" in md and "![" in md and "div.png" in md
    again = _json(args)  # deterministic for the fixed batch
    assert again["targets"] == record["targets"]


def test_diversity_of_runs_and_untrained_models_as_markdown(grid_runs, tmp_path: Path) -> None:
    result = runner.invoke(app, [
        "analyze", "diversity", str(grid_runs["conv"]), str(grid_runs["conv"] / "best.pt"),
        "vit-mini-conv", "--set", "img_size=16", "--images", "16", "--format", "markdown",
        "--out", str(tmp_path / "d.png")])
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "## Patch-token diversity: mean pairwise cosine similarity" in text
    assert "## Patch-token diversity: effective rank" in text
    assert "| vit-mini-conv (best.pt)" in text and "| vit-mini-conv (untrained)" in text
    assert "16 val images (evenly spaced) of digits" in text
    assert (tmp_path / "d.png").stat().st_size > 20_000


def test_stem_bn_of_a_run_and_a_grid(grid_runs, tmp_path: Path) -> None:
    record = _json(["analyze", "stem-bn", str(grid_runs["conv"]), "--format", "json",
                    "--out", str(tmp_path / "bn.png")])
    ckpt = torch.load(grid_runs["conv"] / "last.pt", weights_only=True)["model"]
    layers = record["targets"][0]["layers"]
    assert [layer["layer"] for layer in layers] == [f"patch_embed.stem.{i}.norm"
                                                    for i in range(3)]
    gamma = ckpt["patch_embed.stem.0.norm.weight"]
    assert layers[0]["gamma"] == pytest.approx(gamma.double().tolist())
    assert layers[0]["std"] == pytest.approx(gamma.double().std().item())
    assert layers[0]["conv"] == "3s2c32"
    assert (tmp_path / "bn.png").stat().st_size > 10_000
    # a grid: cells without BN (patchify) or without a checkpoint are skipped, not errors
    result = runner.invoke(app, ["analyze", "stem-bn", "--grid", str(grid_runs["grid"]),
                                 "--runs-dir", str(grid_runs["runs"]), "--format", "markdown",
                                 "--out", str(tmp_path / "bn-grid.png")])
    assert result.exit_code == 0, result.output
    assert "skipped patchify: no BN in its stem" in result.stderr
    assert "| conv, BN + ReLU" in result.stdout and "frac |γ| < 0.1" in result.stdout


def test_stability_table_and_plot(grid_runs, tmp_path: Path) -> None:
    out = tmp_path / "stab.png"
    record = _json(["analyze", "stability", str(grid_runs["grid"]), "--runs-dir",
                    str(grid_runs["runs"]), "--format", "json", "--out", str(out)])
    runs = {r["labels"]["stem"]: r for r in record["runs"]}
    result = json.loads((grid_runs["conv"] / "result.json").read_text())
    conv = runs["conv"]
    assert conv["status"] == "done" and conv["top1"] == result["top1"]
    for key in ("grad_norm_max", "loss_spikes", "max_update_ratio"):
        assert conv[key] == pytest.approx(result[key])
    div = runs["conv-nobn"]
    assert div["diverged"] and div["epoch"] == 2 and div["top1"] is None
    assert (div["grad_norm_max"], div["loss_spikes"], div["max_update_ratio"]) == (50.0, 3, 0.25)
    assert out.stat().st_size > 20_000
    md = runner.invoke(app, ["analyze", "stability", str(grid_runs["grid"]), "--runs-dir",
                             str(grid_runs["runs"]), "--format", "markdown", "--no-write"])
    assert md.exit_code == 0, md.output
    assert "diverged@e2" in md.stdout and "grad-norm max" in md.stdout
    assert "wrote" not in md.stderr


def test_rich_table_on_a_terminal(grid_runs) -> None:
    result = runner.invoke(app, ["analyze", "diversity", "vit-mini-patch", "--set",
                                 "img_size=16", "--images", "8", "--no-write"])
    assert result.exit_code == 0, result.output
    assert "mean pairwise cosine similarity" in result.stdout
    assert "vit-mini-patch (untrained)" in result.stdout


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["diversity"], "give run directories, checkpoints or model names, or --grid"),
    (["diversity", "vit-mini-cnov"], "not a run directory, a checkpoint file or a catalogue "
                                     "model: unknown model 'vit-mini-cnov'"),
    (["diversity", "vit-mini-conv", "--images", "1"], "--images 1"),
    (["diversity", "vit-mini-conv", "--preset", "mini"], "add --grid NAME"),
    (["diversity", "--grid", "nosuchgrid"], "no grid 'nosuchgrid'"),
    (["diversity", "--grid", "stem", "--preset", "mini"], "has no run with a checkpoint"),
    (["diversity", "{empty_dir}"], "without a checkpoint"),
    (["diversity", "{garbage_pt}"], "not a readable srv checkpoint"),
    (["stem-bn", "vit-mini-patch"], "has no BatchNorm layer"),
    (["stem-bn", "vit-mini-conv-ln"], "has no BatchNorm layer"),
    (["stability", "warmup"], "has no run with a logged epoch"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    args = [a.format(empty_dir=tmp_path / "empty", garbage_pt=tmp_path / "bad.pt")
            for a in args]
    result = runner.invoke(app, ["analyze", *args, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("srv: error: "), result.stderr
    assert message in lines[0]


def test_effective_rank_bound_in_table_notes() -> None:
    res = Diversity(["stem"], [0.5], [0.0], [3.0], [0.0], n_images=2, n_tokens=16, dim=96)
    spec = TargetSpec(label="m", kind="model", source="m", config={})
    cos, rank = diversity_tables([spec], [res])
    assert any("min(N=16, C=96) = 16" in n for n in rank.notes)
    assert math.isclose(cos.rows[0][2].mean, 0.5)


def test_analyze_help_imports_nothing_heavy() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from reproduce.cli import app\n"
        "for cmd in ('diversity', 'stem-bn', 'stability'):\n"
        "    r = CliRunner().invoke(app, ['analyze', cmd, '--help'])\n"
        "    assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in ('torch', 'timm', 'pandas', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=Path(__file__).resolve().parent.parent)

"""Recipes: the paper recipes field by field, validation, overrides and the derived values."""

from __future__ import annotations

from pathlib import Path

import pytest

from reproduce.config import resolve_config, scaled_lr
from reproduce.errors import SrvError
from reproduce.recipes import Recipe, load_recipe, parse_overrides


def test_deit_recipe_matches_the_paper_field_by_field() -> None:
    r, meta = load_recipe("deit")
    assert "DeiT" in meta["source"]
    expected = dict(
        epochs=300, opt="adamw", opt_eps=1e-8, weight_decay=0.05, lr=5e-4, lr_base_batch=512,
        lr_scaling="linear", sched="cosine", warmup_epochs=5.0, warmup_lr=1e-6, min_lr=1e-5,
        drop_path=0.1, drop=0.0, smoothing=0.1, aa="rand-m9-mstd0.5-inc1",
        interpolation="bicubic", reprob=0.25, remode="pixel", recount=1, mixup=0.8, cutmix=1.0,
        mixup_prob=1.0, mixup_switch_prob=0.5, aug_repeats=3, ema_decay=0.99996, clip_grad=0.0,
        crop_pct=0.875, img_size=224, batch_size=1024, sched_step="epoch",
    )
    assert {k: getattr(r, k) for k in expected} == expected


def test_xiao_recipe_matches_the_paper() -> None:
    r, _ = load_recipe("xiao")
    assert (r.opt, r.lr, r.lr_base_batch, r.weight_decay, r.epochs, r.warmup_epochs) == (
        "adamw", 1e-3, 2048, 0.24, 400, 5.0)
    assert (r.mixup, r.cutmix, r.smoothing, r.reprob, r.drop_path, r.aug_repeats) == (
        0.8, 1.0, 0.1, 0.0, 0.0, 0)
    assert r.min_lr == pytest.approx(0.005 * 1e-3)  # pycls MIN_LR is relative to the base lr
    assert r.ema_decay > 0 and r.aa


def test_mini_recipe_is_the_calibration() -> None:
    r, _ = load_recipe("mini")
    assert (r.dataset, r.img_size, r.batch_size, r.epochs, r.opt, r.weight_decay) == (
        "digits", 32, 128, 15, "adamw", 0.05)
    assert scaled_lr(r) == pytest.approx(1e-3)
    assert (r.warmup_epochs, r.smoothing, r.drop_path, r.mixup, r.aa) == (5.0, 0.1, 0.1, 0.0, "")


def test_lr_scaling_rules() -> None:
    assert scaled_lr(Recipe(lr=5e-4, batch_size=1024)) == pytest.approx(1e-3)
    assert scaled_lr(Recipe(lr=5e-4, batch_size=2048, lr_scaling="sqrt")) == pytest.approx(1e-3)
    assert scaled_lr(Recipe(lr=5e-4, batch_size=2048, lr_scaling="none")) == 5e-4


def test_derived_values_are_recorded() -> None:
    cfg = resolve_config("vit-s-conv", "deit")
    d = cfg.derived(world_size=8, steps_per_epoch=1251)
    assert (d["global_batch"], d["per_device_batch"], d["warmup_steps"]) == (1024, 128, 6255)
    assert d["lr"] == pytest.approx(1e-3) and "linear" in d["lr_rule"]
    with pytest.raises(SrvError, match="not divisible by the world size 3"):
        cfg.derived(world_size=3)


@pytest.mark.parametrize("text, message", [
    ("[optim]\nlrr = 1e-3\n", "unknown recipe key 'lrr'.*did you mean 'lr'"),
    ("[optim]\nlr = 'fast'\n", "'lr' .* must be a number"),
    ("[train]\nbatch_size = 1.5\n", "'batch_size' .* must be an integer"),
    ("[train]\namp = 'fp8'\n", "'amp' = 'fp8': must be one of off, bf16, fp16"),
    ("[optim]\nlr = 1e-3\n[schedule]\nlr = 2e-3\n", "'lr' is set twice"),
])
def test_bad_recipes_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SrvError, match=message):
        load_recipe(str(path))


def test_overrides_are_typed_and_checked() -> None:
    assert parse_overrides(["lr=2e-3", "optim.epochs=5", "compile=true", "aa=rand-m9"]) == {
        "lr": 2e-3, "epochs": 5, "compile": True, "aa": "rand-m9"}
    with pytest.raises(SrvError, match="epochs must be an integer"):
        parse_overrides(["epochs=five"])
    with pytest.raises(SrvError, match="unknown recipe key 'epoch'"):
        parse_overrides(["epoch=5"])


def test_hash_covers_results_not_workers() -> None:
    a = resolve_config("vit-mini-conv", "mini")
    assert resolve_config("vit-mini-conv", "mini", {"num_workers": 7}).hash == a.hash
    assert resolve_config("vit-mini-conv", "mini", {"seed": 1}).hash != a.hash
    assert resolve_config("vit-mini-patch", "mini").hash != a.hash
    assert a.run_name == f"vit-mini-conv-{a.hash}"

"""Recipes: the paper recipes field by field, validation, overrides and the derived values."""

from __future__ import annotations

from pathlib import Path

import pytest

from reproduce.errors import SrvError
from reproduce.recipes.recipe import Recipe, load_recipe, parse_overrides
from reproduce.training.config import resolve_config, scaled_lr


def test_deit_recipe_matches_the_paper_field_by_field() -> None:
    r, meta = load_recipe("deit")
    assert "DeiT" in meta["source"]
    expected = dict(
        epochs=300, opt="adamw", opt_eps=1e-8, weight_decay=0.05, lr=5e-4, lr_base_batch=512,
        lr_scaling="linear", sched="cosine", warmup_epochs=5.0, warmup_lr=1e-6, min_lr=1e-5,
        drop_path=0.1, drop=0.0, smoothing=0.1, aa="rand-m9-mstd0.5-inc1",
        interpolation="bicubic", reprob=0.25, remode="pixel", recount=1, mixup=0.8, cutmix=1.0,
        mixup_prob=1.0, mixup_switch_prob=0.5, aug_repeats=3, ema_decay=0.99996, clip_grad=0.0,
        crop_pct=0.875, img_size=224, batch_size=1024, sched_step="epoch-after",
        wd_pos_cls=False,
    )
    assert {k: getattr(r, k) for k in expected} == expected


def test_xiao_recipe_matches_the_paper() -> None:
    """The TOML at a glance; tests/test_fidelity.py checks what the engine builds from it."""
    r, meta = load_recipe("xiao")
    assert "pycls" in meta["source"]
    assert (r.opt, r.lr, r.lr_base_batch, r.weight_decay, r.epochs, r.warmup_epochs) == (
        "adamw", 1e-3, 2048, 0.24, 400, 5.0)
    assert (r.mixup, r.cutmix, r.smoothing, r.reprob, r.drop_path, r.aug_repeats) == (
        0.8, 1.0, 0.1, 0.0, 0.0, 0)
    # pycls's relative warmup start and floor, its EMA, AutoAugment v0, bilinear, PCA lighting
    assert (r.warmup_factor, r.min_lr_factor, r.warmup_lr, r.min_lr) == (0.1, 0.005, 0.0, 0.0)
    assert (r.ema_alpha, r.ema_update_period, r.ema_warmup_copy, r.ema_decay) == (
        1e-5, 32, True, 0.0)
    assert (r.aa, r.interpolation, r.pca_std, r.sched_step, r.wd_pos_cls) == (
        "v0", "bilinear", 0.1, "epoch", True)


def test_a_recipe_can_extend_another(tmp_path: Path) -> None:
    r36, meta = load_recipe("xiao-36gf")
    xiao, _ = load_recipe("xiao")
    assert r36.lr == 7e-4 and meta["extends"] == "xiao" and meta["name"] == "xiao-36gf"
    assert {k: v for k, v in r36.to_dict().items() if k != "lr"} == {
        k: v for k, v in xiao.to_dict().items() if k != "lr"}
    loop = tmp_path / "loop.toml"
    loop.write_text(f'[recipe]\nextends = "{loop}"\n')
    with pytest.raises(SrvError, match="extends itself"):
        load_recipe(str(loop))


def test_train_and_analyze_agree_on_each_models_recipe() -> None:
    from reproduce.analysis.targets import resolve_target
    from reproduce.training.config import default_recipe

    expected = {"vit-mini-conv": "mini", "vit-s-conv": "deit", "vit-b-xiao": "deit",
                "vitp-4gf": "xiao", "vitc-18gf": "xiao", "vitc-36gf": "xiao-36gf",
                "vitp-36gf": "xiao-36gf"}
    for model, recipe in expected.items():
        assert default_recipe(model) == recipe
        assert resolve_config(model).recipe_name == recipe  # srv train's default
        assert resolve_target(model).config["recipe"] == recipe  # srv analyze's


@pytest.mark.parametrize("sets, message", [
    ({"warmup_factor": 0.1}, "'warmup_lr' and 'warmup_factor' are both set"),
    ({"min_lr_factor": 0.01}, "'min_lr' and 'min_lr_factor' are both set"),
    ({"ema_alpha": 1e-5, "ema_decay": 0.999}, "'ema_decay' and 'ema_alpha' are both set"),
    ({"ema_update_period": 0}, "'ema_update_period' must be >= 1"),
    ({"warmup_lr": 0.0, "warmup_factor": 1.5}, "'warmup_factor' must be below 1"),
    ({"sched_step": "step"}, "must be one of update, epoch, epoch-after"),
])
def test_the_pycls_keys_are_checked(sets: dict, message: str) -> None:
    with pytest.raises(SrvError, match=message):
        resolve_config("vit-s-conv", "deit", sets)


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
    d = cfg.derived(world_size=8, steps_per_epoch=1251).to_dict()  # as config.json holds it
    assert (d["global_batch"], d["per_device_batch"], d["warmup_steps"]) == (1024, 128, 6255)
    assert d["lr"] == pytest.approx(1e-3) and "linear" in d["lr_rule"]
    with pytest.raises(SrvError, match="not divisible by the world size 3"):
        cfg.derived(world_size=3)


def test_derived_values_are_the_ones_the_engine_uses() -> None:
    """The xiao recipe's warmup and floor are pycls's fractions of the scaled lr (0.1x, 0.005x),
    not 0; its EMA decay per step follows pycls's alpha rule (1e-5 x 2048 / 400 x 32)."""
    from reproduce.training.builders import build_model, build_optimization

    cfg = resolve_config("vit-mini-conv", "xiao")
    d = cfg.derived(world_size=1, steps_per_epoch=625).to_dict()
    assert d["lr"] == pytest.approx(1e-3)
    assert (d["warmup_lr"], d["min_lr"]) == (pytest.approx(1e-4), pytest.approx(5e-6))
    assert d["ema_decay_per_update"] == pytest.approx(1 - 1e-5 * 2048 / 400 * 32)
    assert d["ema_decay_per_step"] == pytest.approx(d["ema_decay_per_update"] ** (1 / 32))
    # the schedule built for the engine starts and ends at those values
    r = cfg.recipe
    model = build_model(cfg, 10)
    optimizer, schedule, _, _ = build_optimization(model, r, d["lr"], 625, with_ema=False)
    assert schedule.min_lr == pytest.approx(d["min_lr"])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(d["warmup_lr"])
    deit = resolve_config("vit-s-conv", "deit").derived(world_size=8,
                                                        steps_per_epoch=1251).to_dict()
    assert (deit["warmup_lr"], deit["min_lr"]) == (1e-6, 1e-5)


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


# --- the commands: srv recipes, srv train --dry-run --------------------------------------------

def test_srv_recipes_lists_recipes_keys_and_sources() -> None:
    import dataclasses

    from typer.testing import CliRunner

    from reproduce.cli import app
    from reproduce.recipes.recipe import key_help

    runner = CliRunner()
    listing = runner.invoke(app, ["recipes"])
    assert listing.exit_code == 0, listing.output
    for name in ("deit", "xiao", "xiao-36gf", "mini"):
        assert f"\n{name} " in listing.stdout
    assert "deit@7e160fe" in listing.stdout and "pycls@206d0db" in listing.stdout
    keys = runner.invoke(app, ["recipes", "--keys"])
    assert keys.exit_code == 0
    for f in dataclasses.fields(Recipe):
        assert key_help(f.name), f"{f.name} has no meaning for --keys"
        assert f"\n{f.name} " in keys.stdout
    assert "update | epoch | epoch-after" in keys.stdout
    deit = runner.invoke(app, ["recipes", "deit", "--no-facts"])
    assert deit.exit_code == 0
    line = next(x for x in deit.stdout.splitlines() if x.startswith("sched_step "))
    assert "epoch-after" in line and "main.py:432" in line
    line = next(x for x in deit.stdout.splitlines() if x.startswith("num_workers "))
    assert "srv's choice" in line
    assert "known differences from the source" in deit.stdout


def test_srv_recipes_measures_what_srv_builds() -> None:
    from typer.testing import CliRunner

    from reproduce.cli import app

    result = CliRunner().invoke(app, ["recipes", "xiao"])
    assert result.exit_code == 0, result.output
    facts = result.stdout.split("against the source")[1].split("known differences")[0]
    assert "DIFFERS" not in facts and " same " in facts and "known difference" in facts
    assert "precise BN statistics" in result.stdout  # the differences no object shows
    # the measured rows are cached under the code's version: a second call reads them back
    from reproduce.utils import cache

    assert len(list((cache.cache_dir() / "recipe-facts").glob("*.json"))) >= 1
    again = CliRunner().invoke(app, ["recipes", "xiao"])
    assert again.exit_code == 0 and again.stdout == result.stdout
    mini = CliRunner().invoke(app, ["recipes", "mini"])
    assert mini.exit_code == 0 and "the recipe file" in mini.stdout


def test_train_dry_run_shows_the_schedule_and_the_ema(imagenet_layout: Path) -> None:
    from typer.testing import CliRunner

    from reproduce.cli import app

    runner = CliRunner()
    data = ["--data", str(imagenet_layout)]
    deit = runner.invoke(app, ["train", "vit-s-conv", "--dry-run", *data])
    assert deit.exit_code == 0, deit.output
    lines = [x.strip() for x in deit.stdout.splitlines()]
    assert "epoch    1  lr 1e-06  (warmup start)" in lines
    assert "epoch    2  lr 1e-06" in lines  # DeiT's one-epoch lag
    assert "epoch  300  lr 1.011e-05  (last)" in lines
    assert "EMA: decay 0.99996 per EMA update after every update" in deit.stdout
    xiao = runner.invoke(app, ["train", "vitc-4gf", "--dry-run", *data])
    assert xiao.exit_code == 0
    lines = [x.strip() for x in xiao.stdout.splitlines()]
    assert "epoch    1  lr 0.0001  (warmup start)" in lines
    assert "every 32 updates of an epoch (= 0.99994876 per update)" in xiao.stdout
    refused = runner.invoke(app, ["train", "vit-s-conv", "--set", "opt=sam-adamw", "--dry-run",
                                  *data])
    assert refused.exit_code == 2 and "SAM with fp16" in refused.stderr
    no_data = runner.invoke(app, ["train", "vit-s-conv", "--dry-run"])  # as the run would
    assert no_data.exit_code == 2 and no_data.stderr.count("\n") == 1
    assert "needs --data PATH" in no_data.stderr

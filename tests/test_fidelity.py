"""The recipes against their sources, fact by fact (reproduce/training/fidelity/): DeiT's
main.py with timm 0.3.2, and pycls's vitconfigs branch for Xiao et al.

Each fact names its source (file:line or config key) and is measured on what the engine builds
(the optimizer's param groups, the lr the schedule puts in the optimizer, the transforms, the EMA
acting on a probe, the initialised model), never on the TOML text. A fact fails when srv drifts
from the source, or from the known difference the fact states.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from reproduce.recipes.recipe import Recipe
from reproduce.training.fidelity.facts import COMMON_CHOICES, Built, Fact
from reproduce.training.fidelity.sources import SOURCES, source_for

_BUILT: dict[str, Built] = {}


def _built(recipe: str) -> Built:
    if recipe not in _BUILT:
        src = SOURCES[recipe]
        _BUILT[recipe] = Built(src.recipe, src.model)
    return _BUILT[recipe]


CASES = [(name, fact) for name, src in SOURCES.items() for fact in src.facts]


@pytest.mark.parametrize("recipe, fact", CASES,
                         ids=[f"{name}: {fact.what}" for name, fact in CASES])
def test_what_srv_builds_follows_the_source(recipe: str, fact: Fact) -> None:
    assert fact.source and (":" in fact.source or "." in fact.source), "name the source"
    measured = fact.measure(_built(recipe))
    assert fact.matches(measured), (
        f"{recipe}: {fact.what}: srv builds {measured!r}, the source ({fact.source}) says "
        f"{fact.value!r}" + (f" and srv states the known difference {fact.srv!r}"
                             if fact.differs else ""))


@pytest.mark.parametrize("recipe", list(SOURCES))
def test_every_key_has_a_source_or_a_reason(recipe: str) -> None:
    src = SOURCES[recipe]
    keys = {f.name for f in dataclasses.fields(Recipe)}
    covered = src.keys_covered() | set(src.choices) | set(COMMON_CHOICES)
    assert keys - covered == set(), f"{recipe}: keys with neither a source nor a reason"
    assert src.keys_covered() <= keys, "a fact names a key that does not exist"
    for fact in src.facts:
        assert fact.differs == bool(fact.why), f"{fact.what}: a known difference says why"


def test_the_source_formulas_are_the_sources() -> None:
    """The independent re-statements the facts compare against, at hand-checked points."""
    from reproduce.training.fidelity.sources import deit_epoch_lr, pycls_ema_alpha, pycls_epoch_lr

    # DeiT: epochs 1 and 2 at warmup_lr, epoch 7 at sched(5) = the cosine just past its peak
    assert deit_epoch_lr(1) == deit_epoch_lr(2) == 1e-6
    assert deit_epoch_lr(3) == pytest.approx(1e-6 + (1e-3 - 1e-6) / 5)
    assert deit_epoch_lr(7) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5)
                                             * (1 + math.cos(math.pi * 5 / 300)))
    # pycls: warmup starts at 0.1 x lr, the last epoch sits near 0.005 x lr
    assert pycls_epoch_lr(1) == pytest.approx(1e-4)
    assert pycls_epoch_lr(400) == pytest.approx(5e-6, rel=0.01)
    # pycls EMA: 1e-5 x 2048 / 400 x 32, about 0.99995 per update
    assert pycls_ema_alpha() == pytest.approx(1.6384e-3)
    assert (1 - pycls_ema_alpha()) ** (1 / 32) == pytest.approx(0.99995, abs=2e-6)


def test_xiao_36gf_shares_the_xiao_facts_at_its_own_lr() -> None:
    assert source_for("xiao-36gf") is SOURCES["xiao-36gf"]
    assert source_for("mini") is None
    peak = {s.recipe: next(f for f in s.facts if f.what == "peak lr").value
            for s in SOURCES.values() if s.recipe.startswith("xiao")}
    assert peak == {"xiao": 1e-3, "xiao-36gf": 7e-4}


def test_a_bn_stem_warns_when_its_batch_per_device_is_not_the_sources() -> None:
    """Per-GPU BN is faithful (neither DeiT nor pycls syncs it), but the BN batch follows the
    launch: global batch / world size / accum_steps."""
    from torch import nn

    from reproduce.training.fidelity.sources import bn_batch_warning, source_bn_batch

    bn, plain = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)), nn.Linear(4, 4)
    assert source_bn_batch("deit", "vit-s-conv")[0] == 256
    assert source_bn_batch("deit", "vit-b-conv")[0] == 64
    assert source_bn_batch("xiao", "vitc-18gf")[0] == 128
    assert source_bn_batch("xiao-36gf", "vitc-36gf")[0] == 64
    assert source_bn_batch("mini", "vit-mini-conv") is None
    assert bn_batch_warning("deit", "vit-s-conv", bn, 256, 4, 1) is None  # DeiT's own launch
    note = bn_batch_warning("deit", "vit-s-conv", bn, 128, 8, 1)  # 1024 over 8 GPUs
    assert note and "128 images per device (global batch 1024 / 8 ranks" in note
    assert "source's over 256 per GPU" in note
    assert bn_batch_warning("deit", "vit-s-patch", plain, 128, 8, 1) is None  # no BN
    assert bn_batch_warning("xiao", "vitc-4gf", bn, 256, 2, 4) is None  # 2048 / 2 / 4

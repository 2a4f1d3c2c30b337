"""The model catalogue: parameter counts, every stem kind, stem specs, timm registration, CLI names.

Full-size models are built on the ``meta`` device (shapes only) for parameter counts; forward
passes use depth-1 models at 224/16 and the ``vit-mini-*`` models at 32/4.
"""

from __future__ import annotations

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.models import (
    CATALOGUE,
    STEM_KINDS,
    StemEmbed,
    StemSpec,
    StemSpecError,
    UnknownModelError,
    create,
    get_entry,
    stem_spec,
)

# docs/paper.md §3: "exact values from the same formulas" (params, M)
XIAO_PARAMS_M = {
    "vitp-1gf": 4.83, "vitc-1gf": 4.57, "vitp-4gf": 18.51, "vitc-4gf": 17.75,
    "vitp-18gf": 86.57, "vitc-18gf": 81.57, "vitp-36gf": 178.36, "vitc-36gf": 167.80,
}
# docs/paper.md §2: DeiT-Ti / S / B exact parameter counts (M)
DEIT_PARAMS_M = {"vit-t-patch": 5.72, "vit-s-patch": 22.05, "vit-b-patch": 86.57}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared CPU the OpenMP spin-wait
    makes them 100x slower; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(name: str, **kwargs) -> int:
    """Parameter count of a catalogue model, built on the meta device (no memory, no init)."""
    with torch.device("meta"):
        model = create(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", sorted(XIAO_PARAMS_M))
def test_xiao_params_exact(name: str) -> None:
    assert round(n_params(name) / 1e6, 2) == XIAO_PARAMS_M[name]


@pytest.mark.parametrize("name", sorted(DEIT_PARAMS_M))
def test_deit_params_exact(name: str) -> None:
    assert round(n_params(name) / 1e6, 2) == DEIT_PARAMS_M[name]


def test_xiao_c_models_drop_one_block() -> None:
    for gf in ("1gf", "4gf", "18gf", "36gf"):
        assert get_entry(f"vitc-{gf}").depth == get_entry(f"vitp-{gf}").depth - 1


@pytest.mark.parametrize("kind", sorted(STEM_KINDS))
def test_every_stem_kind_forward_224_stride16(kind: str) -> None:
    model = create(f"vit-t-{kind}", depth=1, num_classes=10).eval()
    assert isinstance(model.patch_embed, StemEmbed)
    assert model.patch_embed.spec.stride == 16
    with torch.no_grad():
        tokens = model.patch_embed(torch.randn(1, 3, 224, 224))
        out = model(torch.randn(1, 3, 224, 224))
    assert tokens.shape == (1, 14 * 14, 192)
    assert out.shape == (1, 10)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", sorted(STEM_KINDS))
def test_every_stem_kind_trains_at_32_stride4(kind: str) -> None:
    model = create(f"vit-mini-{kind}", num_classes=10)
    assert model.patch_embed.spec.stride == 4
    model.train()
    x = torch.randn(2, 3, 32, 32)
    tokens = model.patch_embed(x)
    assert tokens.shape == (2, 8 * 8, 96)
    out = model(x)
    assert out.shape == (2, 10)
    out.logsumexp(-1).sum().backward()
    first = convs(model.patch_embed)[0]
    assert first.weight.grad is not None and torch.isfinite(first.weight.grad).all()


def test_conv_stem_at_stride4_layout() -> None:
    """At total stride 4: a stride-2 conv, two stride-1 convs, then a stride-2 projection."""
    spec = get_entry("vit-mini-conv").stem_spec()
    assert [layer.stride for layer in spec.layers] == [2, 1, 1, 2]
    assert (spec.norm, spec.act) == ("bn", "relu")
    model = create("vit-mini-conv")
    blocks = list(model.patch_embed.stem)
    assert [b.conv.stride for b in blocks] == [(2, 2), (1, 1), (1, 1), (2, 2)]
    assert [b.conv.kernel_size for b in blocks] == [(3, 3), (3, 3), (3, 3), (2, 2)]
    assert [b.conv.out_channels for b in blocks] == [32, 32, 32, 96]
    for b in blocks[:-1]:  # conv (no bias) -> BN -> ReLU: the scaled ReLU
        assert b.conv.bias is None
        assert isinstance(b.norm, nn.BatchNorm2d) and isinstance(b.act, nn.ReLU)
    assert blocks[-1].conv.bias is not None and len(blocks[-1]) == 1


def test_conv_stem_at_stride16_is_volo_layout() -> None:
    spec = stem_spec("conv", 16, 384)
    assert [(layer.kernel, layer.stride, layer.channels) for layer in spec.layers] == [
        (7, 2, 64), (3, 1, 64), (3, 1, 64), (8, 8, None)]


@pytest.mark.parametrize(
    ("kind", "norm", "act", "post"),
    [("conv-nobn", nn.Identity, nn.ReLU, None), ("conv-norelu", nn.BatchNorm2d, nn.Identity, None),
     ("conv-linear", nn.Identity, nn.Identity, None), ("patch-bnrelu", None, None, nn.BatchNorm2d)],
)
def test_stem_ablations_drop_the_right_layers(kind: str, norm, act, post) -> None:
    model = create(f"vit-mini-{kind}")
    blocks = list(model.patch_embed.stem)
    for b in blocks[:-1]:
        assert isinstance(getattr(b, "norm", nn.Identity()), norm)
        assert isinstance(getattr(b, "act", nn.Identity()), act)
    if post is not None:
        assert isinstance(blocks[-1].norm, post) and isinstance(blocks[-1].act, nn.ReLU)


def test_xiao_18gf_stem_matches_table1() -> None:
    spec = get_entry("vitc-18gf").stem_spec()
    assert [layer.channels for layer in spec.layers[:-1]] == [64, 128, 128, 256, 256, 512]
    assert [layer.stride for layer in spec.layers] == [2, 2, 1, 2, 1, 2, 1]
    assert spec.layers[-1].kernel == 1 and spec.stride == 16


@pytest.mark.parametrize(
    "text",
    ["3s2c48,3s2c96,3s2c192,3s2c384,1s1;norm=bn;act=relu", "16s16", "7s2c64,3s1c64,3s1c64,8s8",
     "4s4;norm=none;act=none;post_norm=bn;post_act=relu", "3s2c32,2s2;norm=ln;act=gelu"],
)
def test_spec_string_round_trip(text: str) -> None:
    spec = StemSpec.parse(text)
    assert StemSpec.parse(str(spec)) == spec
    assert str(StemSpec.parse(str(spec))) == str(spec)


def test_catalogue_specs_round_trip() -> None:
    for entry in CATALOGUE.values():
        spec = entry.stem_spec()
        assert StemSpec.parse(str(spec)) == spec
        assert spec.stride == entry.stride


@pytest.mark.parametrize(
    "text",
    ["", "3x2", "3s2c48,3s2c96", "3s0", "0s1", "3s2;norm=xx", "3s2;act=tanh", "3s2;foo=bar",
     "3s2;norm", "3s2c48,,1s1"],
)
def test_bad_spec_raises(text: str) -> None:
    with pytest.raises(StemSpecError):
        StemSpec.parse(text)


def test_bad_stem_geometry_raises() -> None:
    with pytest.raises(StemSpecError):
        stem_spec("nope", 16, 192)
    with pytest.raises(StemSpecError):
        stem_spec("conv", 12, 192)  # not a power of two
    with pytest.raises(StemSpecError):
        StemEmbed(StemSpec.parse("4s4"), img_size=32, patch_size=8, embed_dim=96)
    with pytest.raises(StemSpecError):
        create("vit-mini-patch", img_size=30)  # not divisible by the stride


def test_timm_create_model_by_srv_name() -> None:
    import reproduce.models.vit  # noqa: F401  (registers the catalogue with timm)

    model = timm.create_model("srv_vit_s_conv", num_classes=10)
    assert isinstance(model, VisionTransformer)
    assert isinstance(model.patch_embed, StemEmbed)
    assert str(model.patch_embed.spec) == str(get_entry("vit-s-conv").stem_spec())
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)
    ours = sum(p.numel() for p in model.parameters())
    assert ours == n_params("vit-s-conv", num_classes=10)
    assert "srv_vitc_4gf" in timm.list_models("srv_*")


def test_get_entry_accepts_timm_names_and_suggests() -> None:
    assert get_entry("srv_vit_s_conv").name == "vit-s-conv"
    with pytest.raises(UnknownModelError) as err:
        get_entry("vit-s-pach")
    assert "vit-s-patch" in str(err.value)


def test_unknown_model_on_the_cli_exits_2_with_one_line() -> None:
    result = CliRunner().invoke(app, ["flops", "vit-mini-patch", "vit-s-pach"])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("srv: error: unknown model 'vit-s-pach'")
    assert "vit-s-patch" in lines[0]


def test_stem_init_follows_each_stems_source() -> None:
    """VOLO (the scaled-ReLU conv-stem) keeps PyTorch's default conv init; pycls initialises Xiao
    et al.'s stems its own way (vitconfigs pycls/models/vit.py:264-281): the 3x3 convs keep
    PyTorch's default, the last 1x1 conv is N(0, sqrt(2 / C_out)). Not He fan-out."""
    import math

    from reproduce.models import StemSpec, create, get_entry

    assert create("vit-mini-conv-nobn").patch_embed.spec.init == "torch"
    assert create("vit-mini-xiao").patch_embed.spec.init == "pycls"
    assert get_entry("vitc-1gf").stem_spec().init == "pycls"
    spec = StemSpec.parse("3s2c24,3s2c48,1s1;init=pycls")
    assert StemSpec.parse(str(spec)) == spec and spec.init == "pycls"
    stem = create("vit-mini-xiao").patch_embed.stem  # 3s2c48, 3s2c96 (mini: width 96), 1x1
    second = stem[1].conv.weight.detach()  # 96 x 48 x 3 x 3
    assert float(second.std()) == pytest.approx(1 / math.sqrt(3 * 48 * 9), rel=0.05)  # default
    assert abs(float(second.std()) - math.sqrt(2 / (9 * 96))) > 0.01  # not He fan-out
    last = stem[-1].conv
    assert float(last.weight.detach().std()) == pytest.approx(math.sqrt(2 / 96), rel=0.1)
    assert float(last.bias.detach().abs().max()) == 0.0


def test_each_body_is_initialised_as_its_source() -> None:
    """DeiT bodies as timm 0.3.2 (cls token std 0.02), Xiao et al.'s as pycls (zero head and
    class token), the CPU body as timm 1.0 (cls token std 1e-6)."""
    from reproduce.models import create, get_entry

    assert {get_entry(n).init for n in ("vit-s-conv", "vitc-1gf", "vit-mini-conv")} == {
        "deit", "pycls", "timm"}
    assert float(create("vit-t-patch").cls_token.detach().std()) == pytest.approx(0.02, rel=0.2)
    assert float(create("vit-mini-patch").cls_token.detach().std()) < 1e-5
    xiao = create("vitp-1gf").requires_grad_(False)
    assert float(xiao.head.weight.abs().max()) == 0.0 and float(xiao.cls_token.abs().max()) == 0.0


def test_the_catalogue_is_read_without_importing_timm() -> None:
    """Listing, dry-run lookups and cached FLOPs read the catalogue; timm (about 2 s of start-up,
    most of it torch._dynamo through torchvision) comes only with a model build."""
    import subprocess
    import sys

    code = ("import sys; from reproduce.models import CATALOGUE, get_entry; "
            "assert get_entry('srv_vit_s_conv').name == 'vit-s-conv' and len(CATALOGUE) > 20; "
            "print('timm' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"

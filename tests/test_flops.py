"""Parameter / FLOP counting (reproduce.models.flops, ``srv flops``) against published values.

Golden values: docs/paper.md §2 (DeiT, exact params; GFLOPs 1.26 / 4.61 / 17.58 with attention)
and section 3 (Xiao et al.'s eight models, "exact values from the same formulas"). Counts are real
fvcore traces of the real models; each model is counted once per session (``counted``).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from reproduce.cli import app
from reproduce.models import create
from reproduce.models.flops import (
    CONVENTION,
    PARTS,
    Complexity,
    FlopCountError,
    count,
    count_model,
    is_heavy_op,
)

REPO = Path(__file__).resolve().parent.parent
FMA = "1 fused multiply-add = 1 FLOP"

# model -> (params M, exact to 2 decimals; GFLOPs, within 0.5%)
DEIT = {"vit-t-patch": (5.72, 1.26), "vit-s-patch": (22.05, 4.61), "vit-b-patch": (86.57, 17.58)}
XIAO = {
    "vitp-1gf": (4.83, 1.08), "vitc-1gf": (4.57, 1.08),
    "vitp-4gf": (18.51, 3.91), "vitc-4gf": (17.75, 3.97),
    "vitp-18gf": (86.57, 17.58), "vitc-18gf": (81.57, 17.73),
    "vitp-36gf": (178.36, 36.00), "vitc-36gf": (167.80, 35.03),
}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Batch-1 traces gain little from intra-op threads, and on a shared CPU the OpenMP
    spin-wait makes them many times slower; restore the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@functools.cache
def counted(name: str) -> Complexity:
    return count(name)


def within(value: float, golden: float, rel: float = 0.005) -> bool:
    return abs(value - golden) <= rel * golden


@pytest.mark.parametrize("name", list(DEIT))
def test_deit_golden(name: str) -> None:
    params_m, gflops = DEIT[name]
    rec = counted(name)
    assert round(rec.params_m, 2) == params_m
    assert within(rec.gflops, gflops), rec.gflops


@pytest.mark.parametrize("name", list(XIAO))
def test_xiao_golden(name: str) -> None:
    params_m, gflops = XIAO[name]
    rec = counted(name)
    assert round(rec.params_m, 2) == params_m
    assert within(rec.gflops, gflops), rec.gflops


def test_attention_is_counted() -> None:
    """Without the SDPA handle fvcore drops QK^T and AV: ViT-S would count ~7.8% lower."""
    with_attn = counted("vit-s-patch")
    model = create("vit-s-patch")
    without = count_model(model, 224, name="vit-s-patch", attention=False, strict=False)
    tokens, width, depth = 14 * 14 + 1, 384, 12
    assert with_attn.flops - without.flops == depth * 2 * tokens * tokens * width
    assert 0.07 < 1 - without.flops / with_attn.flops < 0.085
    assert round(without.gflops, 3) == 4.251  # ANCHORS.md: default fvcore on vit_small
    assert without.unsupported_ignored["aten::scaled_dot_product_attention"] == depth


def test_skipped_attention_fails_loudly() -> None:
    model = create("vit-mini-patch")
    with pytest.raises(FlopCountError, match="scaled_dot_product_attention"):
        count_model(model, 32, attention=False)


class _Baddbmm(nn.Module):
    """A heavy op fvcore 0.1.5 has no handle for."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(1, 8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.flatten(2)[:, :8, :8]
        return torch.baddbmm(b, b, self.w.expand(b.shape[0], 8, 8))


def test_unsupported_heavy_op_raises() -> None:
    with pytest.raises(FlopCountError, match=r"aten::baddbmm"):
        count_model(_Baddbmm(), 8, name="toy")
    rec = count_model(_Baddbmm(), 8, name="toy", strict=False)
    assert rec.unsupported_ignored == {"aten::baddbmm": 1}


@pytest.mark.parametrize(
    ("op", "heavy"),
    [("aten::matmul", True), ("aten::mm", True), ("aten::bmm", True), ("aten::baddbmm", True),
     ("aten::addmm", True), ("aten::linear", True), ("aten::_convolution", True),
     ("aten::conv2d", True), ("aten::einsum", True), ("aten::scaled_dot_product_attention", True),
     ("aten::_scaled_dot_product_flash_attention_for_cpu", True),
     ("aten::add", False), ("aten::add_", False), ("aten::mul", False), ("aten::gelu", False),
     ("aten::softmax", False), ("aten::addcmul", False), ("aten::layer_norm", False)],
)
def test_heavy_op_names(op: str, heavy: bool) -> None:
    assert is_heavy_op(op) is heavy


def test_cheap_ops_are_listed_not_counted() -> None:
    rec = counted("vit-s-patch")
    assert rec.unsupported_ignored == {"aten::add": 25, "aten::gelu": 12}
    assert not any(is_heavy_op(op) for op in rec.unsupported_ignored)


@pytest.mark.parametrize("name", ["vit-s-patch", "vitc-4gf", "vit-mini-conv", "vit-t-conv-ln"])
def test_breakdown_sums_to_total(name: str) -> None:
    rec = counted(name)
    assert sum(getattr(rec, f"{p}_flops") for p in PARTS) == rec.flops
    assert sum(getattr(rec, f"{p}_params") for p in PARTS) == rec.params
    d = rec.to_dict()
    assert sum(d[f"{p}_gflops"] for p in PARTS) == pytest.approx(d["gflops"])
    assert sum(d[f"{p}_params_m"] for p in PARTS) == pytest.approx(d["params_m"])
    assert rec.blocks_flops > 0.5 * rec.flops and rec.stem_flops > 0


def test_breakdown_of_vit_s_by_hand() -> None:
    rec = counted("vit-s-patch")
    n, d = 14 * 14, 384
    assert rec.stem_flops == n * 16 * 16 * 3 * d  # patchify conv, bias not counted
    assert rec.stem_params == 16 * 16 * 3 * d + d
    assert rec.head_flops == d * 1000 + (n + 1) * d * 5  # classifier + final LayerNorm
    assert rec.head_params == d * 1000 + 1000 + 2 * d
    assert rec.other_params == d + (n + 1) * d  # cls token + position embedding
    assert rec.other_flops == 0


def test_img_size_override_and_native_size() -> None:
    native = counted("vit-mini-patch")
    assert native.img_size == 32
    big = count("vit-mini-patch", img_size=64)
    assert big.img_size == 64
    assert big.params - native.params == (16 * 16 - 8 * 8) * 96  # a longer position embedding
    assert big.flops > 3 * native.flops
    assert count("srv_vit_mini_patch").flops == native.flops  # timm name accepted


def test_count_keeps_the_callers_rng() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    count("vit-mini-conv")
    assert torch.equal(torch.rand(3), expected)


def test_record_access_and_json() -> None:
    rec = counted("vit-mini-conv")
    assert rec["gflops"] == rec.gflops and rec["params_m"] == rec.params_m
    d = json.loads(json.dumps(rec.to_dict()))
    assert d["model"] == "vit-mini-conv" and d["img_size"] == 32
    assert FMA in d["convention"]


# --- the CLI ---------------------------------------------------------------------------------


def invoke(*args: str, env: dict[str, str] | None = None):
    result = CliRunner().invoke(app, ["flops", *args], env=env)
    assert result.exit_code == 0, result.output
    return result


def test_cli_json_acceptance() -> None:
    """Issue 2: ``srv flops vit-t-patch vit-s-patch vit-b-patch --format json``."""
    rows = json.loads(invoke(*DEIT, "--format", "json").stdout)
    assert [r["model"] for r in rows] == list(DEIT)
    for row in rows:
        params_m, gflops = DEIT[row["model"]]
        assert round(row["params_m"], 2) == params_m
        assert within(row["gflops"], gflops)
        assert row["convention"] == CONVENTION


def test_cli_markdown() -> None:
    out = invoke("vit-mini-patch", "vit-mini-conv", "--format", "markdown").stdout
    assert FMA in out and "attention" in out
    header = next(line for line in out.splitlines() if line.startswith("| model"))
    assert "params (M)" in header and "GFLOPs" in header and "stem GFLOPs" in header
    row = next(line for line in out.splitlines() if line.startswith("| vit-mini-conv "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    rec = counted("vit-mini-conv")
    assert cells[1] == "32x32"
    assert float(cells[2]) == round(rec.params_m, 2)
    assert float(cells[3]) == round(rec.gflops, 3)


def test_cli_latex() -> None:
    out = invoke("vit-mini-patch", "--format", "latex").stdout
    for needle in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{", FMA,
                   r"\label{tab:complexity}", r"patch\_embed", "vit-mini-patch & 32x32"):
        assert needle in out, needle
    assert "patch_embed" not in out.replace(r"patch\_embed", "")  # escaped everywhere


def test_cli_table_states_the_convention() -> None:
    out = invoke("vit-mini-patch").stdout
    assert "vit-mini-patch" in out and FMA in out


def test_cli_write(tmp_path: Path) -> None:
    invoke("vit-mini-patch", "vit-mini-conv", "--format", "json", "--write", "--out",
           str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["complexity.md", "complexity.tex"]
    assert "| vit-mini-conv" in (tmp_path / "complexity.md").read_text()
    assert r"\toprule" in (tmp_path / "complexity.tex").read_text()


def test_cli_write_honours_srv_tables_dir(tmp_path: Path) -> None:
    result = invoke("vit-mini-patch", "--format", "json", "--write",
                    env={"SRV_TABLES_DIR": str(tmp_path)})
    assert (tmp_path / "complexity.md").is_file() and (tmp_path / "complexity.tex").is_file()
    assert str(tmp_path) in result.stderr


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from reproduce.cli import app\n"
        "r = CliRunner().invoke(app, ['flops', '--help'])\n"
        "text = ' '.join(r.stdout.split())\n"
        "assert r.exit_code == 0 and '1 fused multiply-add = 1 FLOP' in text, r.output\n"
        "heavy = [m for m in ('torch', 'timm', 'fvcore', 'pandas') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


@pytest.mark.parametrize("name", ["vit-s-patch", "vitc-4gf", "vitp-18gf"])
def test_committed_complexity_table_is_current(name: str) -> None:
    """``tables/complexity.md`` (``srv flops --write``) agrees with a fresh count."""
    text = (REPO / "tables" / "complexity.md").read_text()
    row = re.search(rf"^\| {re.escape(name)} +\|.*$", text, flags=re.M)
    assert row, f"{name} missing from tables/complexity.md: run 'srv flops --write'"
    cells = [c.strip() for c in row.group(0).strip("|").split("|")]
    rec = counted(name)
    assert (float(cells[2]), float(cells[3])) == (round(rec.params_m, 2), round(rec.gflops, 3))

"""GPU throughput figures for the dry runs' GPU-hours, each labelled for what it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reproduce.errors import SrvError
from reproduce.training.config import resolve_config
from reproduce.training.cost import GpuRates, parse_rates, wall_clock

DEIT = resolve_config("vit-s-conv", "deit", {}).recipe


def _bench(folder: Path, name: str, env: str, **records: list[dict]) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(json.dumps({"environment": env, **records}))


def test_rates_are_labelled_and_conv_variants_scale_from_the_conv_stem(tmp_path: Path) -> None:
    gpu = "torch 2.14, timm 1.0, NVIDIA H100 80GB HBM3, 16 CPU threads of x"
    bare = [{"model": m, "mode": "eager", "img_per_s": r, "batch": 256, "amp": "bf16"}
            for m, r in (("vit-s-conv", 2668.0), ("vit-s-patch", 5170.0))]
    _bench(tmp_path / "b", "h100.json", gpu, results=bare)
    rates = GpuRates({}, [tmp_path / "b"])
    conv = rates("vit-s-conv", DEIT)
    assert conv.kind == "bare" and conv.img_per_s == 2668.0
    assert "compute-only lower bound: srv bench bare step" in conv.describe()
    nobn = rates("vit-s-conv-nobn", DEIT)  # unmeasured: the conv-stem's rate, not patchify's
    assert nobn.kind == "scaled" and nobn.img_per_s == pytest.approx(2668.0, rel=0.01)
    assert nobn.source.startswith("vit-s-conv's 2,668 img/s")
    # an engine + loader figure of the recipe's loader wins over the bare step
    loader = [{"model": "vit-s-conv", "mode": "eager", "pipeline": "timm", "img_per_s": 1500.0,
               "error": None}]
    _bench(tmp_path / "c", "h100-pipelines.json", gpu, bare=bare[:1], engine=loader)
    piped = GpuRates({}, [tmp_path / "c"])("vit-s-conv", DEIT)
    assert piped.kind == "loader" and piped.img_per_s == 1500.0
    assert "engine + loader rate: srv bench --pipelines timm" in piped.describe()
    # a CPU bench file is no GPU figure
    _bench(tmp_path / "d", "cpu.json", "torch 2.14, timm 1.0, cpu, 2 CPU threads of x",
           results=bare)
    assert GpuRates({}, [tmp_path / "d"], anchor=False)("vit-s-conv", DEIT) is None
    # stated, per model or for all; SAM halves any figure
    stated = GpuRates(parse_rates("vit-s-conv=1000,vit-s-patch=3000"), [tmp_path / "b"])
    assert stated("vit-s-conv", DEIT).img_per_s == 1000.0
    assert stated("vit-s-conv", DEIT).describe() == "1,000 img/s per GPU, stated (--img-per-s)"
    sam = resolve_config("vit-s-conv", "deit", {"opt": "sam", "amp": "bf16"}).recipe
    assert GpuRates(parse_rates("800"), [])("vit-s-xiao", sam).img_per_s == 400.0


def test_rates_and_days_read_as_written() -> None:
    assert parse_rates("2668") == {"": 2668.0}
    assert parse_rates("vit-s-conv=2668, vit-s-patch=4037") == {"vit-s-conv": 2668.0,
                                                                "vit-s-patch": 4037.0}
    with pytest.raises(SrvError, match="is not a rate > 0"):
        parse_rates("vit-s-conv=fast")
    assert wall_clock(8 * 24 * 2.5, 8) == "2.5 days on 8 GPUs"
    assert wall_clock(4.0, 8) == "30 min on 8 GPUs" and wall_clock(12.0, 1) == "12.0 h on 1 GPU"

"""Stem BN scales: the per-channel BN gamma of every BatchNorm in a model's stem, the
per-channel scale Wang et al. 2022 tie to adaptive regularisation (``srv analyze stem-bn``), as a
table and a violin plot per layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reproduce.analysis.targets import TargetSpec
from reproduce.errors import SrvError
from reproduce.report.render import Entry, Table

__all__ = ["SMALL_GAMMA", "BNLayer", "stem_bn_stats", "stem_bn_table", "plot_stem_bn"]

SMALL_GAMMA = 0.1


@dataclass
class BNLayer:
    """The BN scales of one stem layer."""

    name: str  # module path inside the model
    conv: str  # the conv it follows, e.g. 3s2c32
    gamma: list[float]

    def stats(self) -> dict[str, Any]:
        g = torch.tensor(self.gamma, dtype=torch.float64)
        return {"layer": self.name, "conv": self.conv, "channels": len(self.gamma),
                "mean": float(g.mean()), "std": float(g.std()) if len(g) > 1 else 0.0,
                "min": float(g.min()), "max": float(g.max()),
                "mean_abs": float(g.abs().mean()),
                "frac_small": float((g.abs() < SMALL_GAMMA).double().mean()),
                "frac_negative": float((g < 0).double().mean())}


def stem_bn_stats(model: nn.Module, label: str = "model") -> list[BNLayer]:
    """Every BatchNorm of the model's stem, in order, with its per-channel scale (gamma).

    Raises :class:`SrvError` when the stem has no BN with a scale (patchify, conv-nobn,
    conv-linear, conv-ln stems)."""
    embed = getattr(model, "patch_embed", None)
    if embed is None:
        raise SrvError(f"{label}: the model has no stem (patch_embed)")
    spec = getattr(embed, "spec", None)
    convs: list[str] = []
    if spec is not None:
        convs = [str(layer) if layer.channels is not None or i < len(spec.layers) - 1
                 else f"{layer} (projection)" for i, layer in enumerate(spec.layers)]
    layers = []
    for name, module in embed.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            conv = ""
            parts = name.split(".")
            if len(parts) >= 2 and parts[0] == "stem" and parts[1].isdigit() and convs:
                conv = convs[int(parts[1])]
            layers.append(BNLayer(name=f"patch_embed.{name}", conv=conv,
                                  gamma=module.weight.detach().double().cpu().tolist()))
    if not layers:
        what = f" ({spec})" if spec is not None else ""
        raise SrvError(f"{label}: its stem{what} has no BatchNorm layer, so there is no BN scale "
                       f"to show; stem-bn needs a stem with BN, e.g. vit-mini-conv, "
                       f"vit-mini-conv-norelu, vit-mini-xiao or vit-mini-patch-bnrelu")
    return layers


def stem_bn_table(targets: Sequence[TargetSpec], layers: Sequence[Sequence[BNLayer]],
                  provenance: str = "", notes: Sequence[str] = ()) -> Table:
    header = ["model / run", "BN layer", "after conv", "channels", "mean", "std", "min", "max",
              f"frac |γ| < {SMALL_GAMMA:g}", "frac γ < 0"]
    align = ["l", "l", "l"] + ["r"] * 7
    rows = []
    for t, bns in zip(targets, layers, strict=True):
        for bn in bns:
            s = bn.stats()
            rows.append([Entry(text=t.label), Entry(text=bn.name.removeprefix("patch_embed.")),
                         Entry(text=bn.conv or "—"), Entry(text=str(s["channels"])),
                         *[Entry(mean=s[k], fmt=".3f") for k in ("mean", "std", "min", "max")],
                         Entry(mean=s["frac_small"], fmt=".2f"),
                         Entry(mean=s["frac_negative"], fmt=".2f")])
    return Table(name="stem-bn", title="Stem BatchNorm scales (gamma)",
                 caption="Per-channel BN scale γ of every BN layer in the stem.",
                 header=header, rows=rows, align=align, provenance=provenance,
                 notes=["An untrained model has γ = 1 everywhere (BN init)."] + list(notes),
                 label="tab:stem-bn")


def plot_stem_bn(targets: Sequence[TargetSpec], layers: Sequence[Sequence[BNLayer]],
                 path: Path | str, title: str = "") -> Path:
    """One panel per target: the distribution of γ per stem BN layer (violin + every channel as a
    dot), with the |γ| < 0.1 band shaded."""
    import numpy as np

    from reproduce.report.plots import _figure, _save

    n = len(targets)
    cols = min(n, 4)
    rows_n = math.ceil(n / cols)
    fig = _figure(3.2 * cols + 0.6, 3.4 * rows_n + 0.4)
    axes = np.atleast_1d(fig.subplots(rows_n, cols, squeeze=False)).ravel()
    rng = np.random.default_rng(0)
    for ax, t, bns in zip(axes, targets, layers, strict=False):
        data = [np.asarray(bn.gamma) for bn in bns]
        pos = list(range(1, len(data) + 1))
        spread = [d for d in data if d.std() > 0]
        if spread:
            idx = [i for i, d in enumerate(data) if d.std() > 0]
            parts = ax.violinplot([data[i] for i in idx], positions=[pos[i] for i in idx],
                                  showmeans=False, showextrema=False, widths=0.8)
            for body in parts["bodies"]:
                body.set_alpha(0.35)
        for p, d in zip(pos, data, strict=True):
            ax.scatter(p + rng.uniform(-0.18, 0.18, len(d)), d, s=6, alpha=0.6, color="k",
                       linewidths=0)
            ax.plot([p - 0.3, p + 0.3], [float(np.mean(d))] * 2, color="C3", linewidth=1.5)
        ax.axhspan(-SMALL_GAMMA, SMALL_GAMMA, color="C1", alpha=0.12, linewidth=0)
        ax.axhline(0.0, color="0.5", linewidth=0.8)
        ax.set_xticks(pos, [bn.conv.split(" ")[0] or bn.name.split(".")[-2]
                            for bn in bns], fontsize=7)
        ax.set_title(t.label, fontsize=8)
        ax.set_ylabel("BN scale γ")
        ax.grid(alpha=0.3, axis="y")
    for ax in axes[n:]:
        ax.set_visible(False)
    note = f"per-channel γ of each stem BN (x: the conv it follows); red: mean; band: " \
           f"|γ| < {SMALL_GAMMA:g}"
    fig.suptitle(f"{title}  [{note}]" if title else note, fontsize=9)
    return _save(fig, Path(path))

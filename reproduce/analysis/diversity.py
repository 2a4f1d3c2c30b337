"""Patch-token diversity: the metrics, measured on a model's tokens, as tables and a plot.

Wang et al. 2022 claim that the scaled ReLU (BN + ReLU) in the conv-stem increases the diversity
of patch tokens (``srv analyze diversity``; definitions in docs/analysis.md). A fixed batch of
validation images (:func:`fixed_images`) goes through the model in eval mode; forward hooks take
the patch tokens (class token dropped) after the stem (``patch_embed``: before the position
embedding) and after every transformer block. Per image and layer, with the ``N x C`` token
matrix ``X``:

- :func:`mean_cosine_similarity`: the mean off-diagonal entry of the cosine Gram matrix
  ``G = X^ X^T`` (``X^``: rows L2-normalised), ``(sum(G) - trace(G)) / (N (N - 1))``; 1 when all
  tokens point the same way, 0 when they are orthogonal; lower = more diverse.
- :func:`effective_rank` (Roy & Vetterli 2007): ``exp(H(p))`` with ``p_k = s_k / sum(s)`` the
  normalised singular values of ``X^`` (uncentred, rows L2-normalised, so every token counts
  equally and the spectrum is that of ``G``); between 1 (all tokens parallel) and
  ``min(N, C)``; higher = more diverse.

Both are averaged over the images (their std over images is kept too). What is measured (runs,
checkpoints, untrained models, a grid's cells) comes from :mod:`reproduce.analysis.targets`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.analysis.targets import TargetSpec, resolve_target
from reproduce.errors import SrvError
from reproduce.records import RunRecord
from reproduce.records.schema import ERANK_IMAGES
from reproduce.report.render import Entry, Table

__all__ = [
    "DEFAULT_IMAGES",
    "Diversity",
    "mean_cosine_similarity",
    "effective_rank",
    "singular_values",
    "token_layers",
    "token_diversity",
    "image_indices",
    "fixed_images",
    "measure_diversity",
    "diversity_tables",
    "plot_diversity",
]

DEFAULT_IMAGES = ERANK_IMAGES


# --- the metrics ---------------------------------------------------------------------------------


def _tokens(tokens: torch.Tensor) -> torch.Tensor:
    if tokens.ndim < 2:
        raise ValueError(f"tokens must be (..., N, C), got shape {tuple(tokens.shape)}")
    return tokens.detach().to(torch.float64)


def mean_cosine_similarity(tokens: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine similarity of the rows of ``tokens`` (``(..., N, C)`` -> ``(...)``).

    ``(sum(G) - trace(G)) / (N (N - 1))`` with ``G`` the Gram matrix of the L2-normalised tokens:
    the mean over the ``N (N - 1)`` ordered pairs ``i != j``. A zero token has cosine 0 with
    every other token. Computed in float64.
    """
    x = _tokens(tokens)
    n = x.shape[-2]
    if n < 2:
        raise ValueError("the mean pairwise cosine similarity needs at least 2 tokens")
    xn = F.normalize(x, dim=-1)
    gram = xn @ xn.transpose(-1, -2)
    off = gram.sum(dim=(-1, -2)) - gram.diagonal(dim1=-2, dim2=-1).sum(-1)
    return off / (n * (n - 1))


def singular_values(x: torch.Tensor) -> torch.Tensor:
    """Singular values of ``(..., N, C)`` matrices as the square roots of the eigenvalues of the
    smaller Gram matrix (``X X^T`` or ``X^T X``): several times faster than an SVD for batches of
    small matrices. Eigenvalues below the numerical-rank tolerance ``max(N, C) * eps * lambda_max``
    (as ``torch.linalg.matrix_rank``) count as 0, so rounding noise adds no rank."""
    n, c = x.shape[-2], x.shape[-1]
    gram = x @ x.transpose(-1, -2) if n <= c else x.transpose(-1, -2) @ x
    lam = torch.linalg.eigvalsh(gram)
    tol = max(n, c) * torch.finfo(lam.dtype).eps * lam.amax(-1, keepdim=True)
    return torch.where(lam > tol, lam, torch.zeros_like(lam)).sqrt()


def effective_rank(tokens: torch.Tensor, normalise: bool = True,
                   centre: bool = False) -> torch.Tensor:
    """Effective rank (Roy & Vetterli 2007) of the ``N x C`` token matrices (``(...)`` out).

    ``exp(-sum_k p_k log p_k)``, ``p_k = s_k / sum_j s_j``, ``s`` the singular values. By default
    the tokens are L2-normalised (each token counts equally; the spectrum is that of the cosine
    Gram matrix) and not centred (so identical tokens give 1 and ``N`` orthonormal tokens give
    ``N``). An all-zero matrix has effective rank 0. Computed in float64.
    """
    x = _tokens(tokens)
    if normalise:
        x = F.normalize(x, dim=-1)
    if centre:
        x = x - x.mean(dim=-2, keepdim=True)
    s = singular_values(x)
    total = s.sum(-1, keepdim=True)
    p = s / total.clamp_min(torch.finfo(s.dtype).tiny)
    rank = torch.exp(-torch.special.xlogy(p, p).sum(-1))
    return torch.where(total.squeeze(-1) > 0, rank, torch.zeros_like(rank))


# --- token diversity of a model ------------------------------------------------------------------


def token_layers(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """``(name, module, prefix tokens to drop)``: the stem, then every transformer block."""
    embed = getattr(model, "patch_embed", None)
    blocks = getattr(model, "blocks", None)
    if embed is None or blocks is None:
        raise SrvError(f"{type(model).__name__} has no patch_embed / blocks: token diversity "
                       f"needs a ViT of the catalogue (timm VisionTransformer)")
    prefix = int(getattr(model, "num_prefix_tokens", 1 if getattr(model, "cls_token", None)
                         is not None else 0))
    return [("stem", embed, 0)] + [(f"block {i}", blk, prefix)
                                   for i, blk in enumerate(blocks, start=1)]


@dataclass
class Diversity:
    """Per-layer token diversity of one model on one batch (means and stds over images)."""

    layers: list[str]
    cosine: list[float]
    cosine_std: list[float]
    erank: list[float]
    erank_std: list[float]
    n_images: int
    n_tokens: int
    dim: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_images": self.n_images, "n_tokens": self.n_tokens, "dim": self.dim,
            "layers": [{"layer": name, "cosine": c, "cosine_std": cs, "erank": e,
                        "erank_std": es}
                       for name, c, cs, e, es in zip(self.layers, self.cosine, self.cosine_std,
                                                     self.erank, self.erank_std, strict=True)],
        }


@torch.no_grad()
def token_diversity(model: nn.Module, images: torch.Tensor, batch_size: int = 64,
                    device: str | torch.device = "cpu", centre: bool = False) -> Diversity:
    """Mean pairwise cosine similarity and effective rank of the patch tokens after the stem and
    after every block, averaged over ``images`` (eval mode, no grad; deterministic for a fixed
    batch on a fixed device). ``centre``: the effective rank of the centred tokens instead."""
    layers = token_layers(model)
    values: dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]] = {
        name: ([], []) for name, _, _ in layers}
    shape: dict[str, int] = {}

    def make_hook(name: str, drop: int) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            t = output[0] if isinstance(output, tuple | list) else output
            if t.ndim == 4:  # NHWC feature map (timm PatchEmbed without flatten)
                t = t.flatten(1, 2)
            t = t[:, drop:].detach().to(torch.float64)  # metrics on the model's device
            if name == "stem":
                shape["n_tokens"], shape["dim"] = int(t.shape[1]), int(t.shape[2])
            values[name][0].append(mean_cosine_similarity(t).cpu())
            values[name][1].append(effective_rank(t, centre=centre).cpu())
        return hook

    was_training = model.training
    model.eval()
    model.to(device)
    handles = [module.register_forward_hook(make_hook(name, drop))
               for name, module, drop in layers]
    try:
        forward = getattr(model, "forward_features", model)
        for chunk in images.split(batch_size):
            forward(chunk.to(device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    def stats(chunks: list[torch.Tensor]) -> tuple[float, float]:
        v = torch.cat(chunks)
        return float(v.mean()), float(v.std(unbiased=True)) if len(v) > 1 else 0.0

    cos = [stats(values[name][0]) for name, _, _ in layers]
    erank = [stats(values[name][1]) for name, _, _ in layers]
    return Diversity(layers=[name for name, _, _ in layers],
                     cosine=[m for m, _ in cos], cosine_std=[s for _, s in cos],
                     erank=[m for m, _ in erank], erank_std=[s for _, s in erank],
                     n_images=len(images), n_tokens=shape.get("n_tokens", 0),
                     dim=shape.get("dim", 0))


# --- the images ----------------------------------------------------------------------------------


def image_indices(n_val: int, n: int) -> list[int]:
    """``n`` indices spread evenly over a val set of ``n_val`` images (all of them if fewer):
    ``floor(i * n_val / n)``. Evenly spread rather than the first ``n``: an ImageNet val folder
    is sorted by class, so its first images are all one class."""
    if n <= 0:
        raise SrvError(f"--images {n}: give a positive number of images")
    if n >= n_val:
        return list(range(n_val))
    return [i * n_val // n for i in range(n)]


def fixed_images(recipe: Any, n: int = DEFAULT_IMAGES) -> tuple[torch.Tensor, int, str]:
    """The fixed batch of a recipe's data: ``(images, num_classes, description)``.

    The whole val set is used (the recipe's ``val_subset`` is ignored, so runs that evaluated on
    different subsets still see the same images), with the recipe's eval transform."""
    from reproduce.data.datasets import build_datasets

    r = dataclasses.replace(recipe, val_subset=0, train_subset=0)
    sets = build_datasets(r, train=False)
    idx = image_indices(len(sets.val), n)  # type: ignore[arg-type]
    images = torch.stack([sets.val[i][0] for i in idx])
    spread = "all" if len(idx) == len(sets.val) else "evenly spaced"  # type: ignore[arg-type]
    desc = f"{len(idx)} val images ({spread}) of {sets.description}"
    return images, sets.num_classes, desc


def _image_key(r: Any) -> tuple[Any, ...]:
    return (r.dataset, r.data_path, r.img_size, r.interpolation, r.crop_pct, r.num_classes)


def measure_diversity(targets: Sequence[TargetSpec], n_images: int = DEFAULT_IMAGES,
                      weights: str = "last", device: str | torch.device = "cpu",
                      data_path: str | None = None, batch_size: int = 64,
                      centre: bool = False) -> list[Diversity]:
    """:func:`token_diversity` of every target on its data set's fixed batch (targets that share
    a data set and input size share the batch; one model in memory at a time)."""
    cache: dict[tuple[Any, ...], tuple[torch.Tensor, int, str]] = {}
    results = []
    for t in targets:
        r = t.recipe(data_path)
        key = _image_key(r)
        if key not in cache:
            cache[key] = fixed_images(r, n_images)
        images, num_classes, desc = cache[key]
        model = t.load(weights, device, num_classes)
        results.append(token_diversity(model, images, batch_size, device, centre))
        t.info["images"] = desc
        del model
    return results


# --- diversity tables and plot -------------------------------------------------------------------


def diversity_tables(targets: Sequence[TargetSpec], results: Sequence[Diversity],
                     title: str = "Patch-token diversity", provenance: str = "",
                     notes: Sequence[str] = ()) -> list[Table]:
    """Two tables, targets as rows and layers as columns: the mean pairwise cosine similarity
    and the effective rank."""
    layers: list[str] = []
    for res in results:
        for name in res.layers:
            if name not in layers:
                layers.append(name)
    header = ["model / run", "top-1 (%)", *[name.replace("block ", "b") for name in layers]]
    align = ["l", "r"] + ["r"] * len(layers)
    tables = []
    for metric, what, fmt, desc in (
            ("cosine", "mean pairwise cosine similarity", ".3f",
             "Mean pairwise cosine similarity of the patch tokens (lower = more diverse)."),
            ("erank", "effective rank", ".1f",
             "Effective rank of the patch-token matrix (higher = more diverse).")):
        rows = []
        for t, res in zip(targets, results, strict=True):
            values = dict(zip(res.layers, getattr(res, metric), strict=True))
            row = [Entry(text=t.label),
                   Entry(mean=t.top1, fmt=".1f") if t.top1 is not None else Entry(text="—")]
            row += [Entry(mean=values[name], fmt=fmt) if name in values else Entry(text="—")
                    for name in layers]
            rows.append(row)
        table_notes = ["Columns: stem = after the stem (before the position embedding); bN = "
                       "after transformer block N. Class token excluded; mean over images."]
        if metric == "erank":
            dims = sorted({(r.n_tokens, r.dim) for r in results})
            bound = ", ".join(f"min(N={n}, C={c}) = {min(n, c)}" for n, c in dims)
            table_notes.append(f"The effective rank is at most {bound}.")
        table_notes += list(notes)
        tables.append(Table(name=f"diversity-{metric}", title=f"{title}: {what}",
                            caption=desc, header=header, rows=rows, align=align,
                            notes=table_notes, provenance=provenance, label=f"tab:{metric}"))
    return tables


def _group_styles(targets: Sequence[TargetSpec]) -> tuple[list[str], list[Any], list[int]]:
    from reproduce.report.plots import _colors

    groups = list(dict.fromkeys(t.group or t.label for t in targets))
    seeds = sorted({t.seed for t in targets})
    return groups, _colors(len(groups)), seeds


def plot_diversity(targets: Sequence[TargetSpec], results: Sequence[Diversity],
                   path: Path | str, title: str = "") -> Path:
    """Per-layer curves of every target on one figure: cosine similarity (left) and effective
    rank (right); one colour per cell / model, one line style per seed."""
    from reproduce.report.plots import SEED_STYLES, _figure, _save

    fig = _figure(11.0, 4.4 + 0.22 * math.ceil(len(targets) / 4))
    ax_cos, ax_rank = fig.subplots(1, 2)
    groups, colors, seeds = _group_styles(targets)
    depth = max(len(r.layers) for r in results)
    ticks = ["stem", *[str(i) for i in range(1, depth)]]
    multi_seed = len(seeds) > 1
    labelled: set[str] = set()
    for t, res in zip(targets, results, strict=True):
        group = t.group or t.label
        color = colors[groups.index(group)]
        style = SEED_STYLES[seeds.index(t.seed) % len(SEED_STYLES)] if multi_seed else "-"
        label = None if group in labelled else group
        labelled.add(group)
        xs = list(range(len(res.layers)))
        for ax, ys in ((ax_cos, res.cosine), (ax_rank, res.erank)):
            ax.plot(xs, ys, style, color=color, marker="o", markersize=3.5, linewidth=1.6,
                    alpha=0.9, label=label if ax is ax_cos else None)
    bounds = sorted({min(r.n_tokens, r.dim) for r in results})
    ax_cos.set(xlabel="layer (stem, then transformer block)",
               ylabel="mean pairwise cosine similarity", title="token similarity (lower = more "
               "diverse)")
    ax_rank.set(xlabel="layer (stem, then transformer block)", ylabel="effective rank",
                title=f"effective rank (higher = more diverse; max {', '.join(map(str, bounds))})")
    for ax in (ax_cos, ax_rank):
        ax.set_xticks(range(depth), ticks)
        ax.grid(alpha=0.3)
    fig.legend(fontsize=8, loc="outside lower center", ncols=min(len(groups), 4))
    n_images = sorted({r.n_images for r in results})
    note = f"{', '.join(map(str, n_images))} val images, patch tokens (class token excluded)"
    if multi_seed:
        note += f"; seeds {', '.join(map(str, seeds))} ({', '.join(SEED_STYLES[: len(seeds)])})"
    fig.suptitle(f"{title}  [{note}]" if title else note, fontsize=10)
    return _save(fig, Path(path))


# --- the diversity claim's measurement, into run records ----------------------------------------


def last_block_erank(targets: Sequence[TargetSpec], n_images: int = ERANK_IMAGES) -> list[float]:
    """Each target's mean effective rank of the patch tokens after its last block, on the fixed
    val batch of ``srv analyze diversity`` (the last column of its table; only that layer is
    measured, which is what the diversity claim reads)."""
    cache: dict[Any, Any] = {}
    out: list[float] = []
    for t in targets:
        r = t.recipe()
        key = _image_key(r)  # the batch srv analyze diversity uses for this data
        if key not in cache:
            cache[key] = fixed_images(r, n_images)
        images, num_classes, _ = cache[key]
        model = t.load("last", "cpu", num_classes)
        _, module, drop = token_layers(model)[-1]
        ranks: list[torch.Tensor] = []
        handle = module.register_forward_hook(
            lambda _m, _i, o, d=drop, acc=ranks: acc.append(
                effective_rank(o[:, d:].to(torch.float64))))
        try:
            with torch.no_grad():
                for chunk in images.split(64):
                    model.forward_features(chunk)
        finally:
            handle.remove()
        out.append(float(torch.cat(ranks).mean()))
        del model
    return out


def with_eranks(records: Sequence[RunRecord], runs_root: Path | str,
                grids: set[str] | None = None) -> list[RunRecord]:
    """The records with each finished run's effective rank after the last block, trained
    (its ``last.pt``) and untrained (the same config and seed, freshly initialised), measured
    once per run folder; ``grids`` limits which grids' runs are measured."""
    runs_root = Path(runs_root)
    wanted = sorted({r.run for r in records if r.result.status == "done"
                     and r.result.erank is None and (grids is None or r.grid in grids)
                     and (runs_root / r.run / "last.pt").exists()})
    measured: dict[str, tuple[float, float]] = {}
    if wanted:
        targets = [resolve_target(str(runs_root / run)) for run in wanted]
        trained = last_block_erank(targets)
        fresh = [dataclasses.replace(t, kind="model", info={}) for t in targets]
        untrained = last_block_erank(fresh)
        measured = dict(zip(wanted, zip(trained, untrained, strict=True), strict=True))
    return [r.with_result(erank=measured[r.run][0], erank_untrained=measured[r.run][1])
            if r.run in measured else r for r in records]

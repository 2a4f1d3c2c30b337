"""Why it works: patch-token diversity, stem BN scales and training-stability signals.

Wang et al. 2022 claim that the scaled ReLU (BN + ReLU) in the conv-stem (i) stabilises training
and (ii) increases the diversity of patch tokens. This module measures both for any run, any
checkpoint or any untrained catalogue model (``srv analyze``; definitions in docs/analysis.md).

* **Token diversity** (:func:`token_diversity`): a fixed batch of validation images goes through
  the model in eval mode; forward hooks take the patch tokens (class token dropped) after the stem
  (``patch_embed``: before the position embedding) and after every transformer block. Per image
  and layer, with the ``N x C`` token matrix ``X``:

  - :func:`mean_cosine_similarity`: the mean off-diagonal entry of the cosine Gram matrix
    ``G = X^ X^T`` (``X^``: rows L2-normalised), ``(sum(G) - trace(G)) / (N (N - 1))``; 1 when all
    tokens point the same way, 0 when they are orthogonal; lower = more diverse.
  - :func:`effective_rank` (Roy & Vetterli 2007): ``exp(H(p))`` with ``p_k = s_k / sum(s)`` the
    normalised singular values of ``X^`` (uncentred, rows L2-normalised, so every token counts
    equally and the spectrum is that of ``G``); between 1 (all tokens parallel) and
    ``min(N, C)``; higher = more diverse.

  Both are averaged over the images (their std over images is kept too).
* **Stem BN scales** (:func:`stem_bn_stats`): the per-channel BN gamma of every BatchNorm in the
  stem, the per-channel scale the paper's theory ties to adaptive regularisation.
* **Stability** (:func:`stability_rows`): the engine's per-epoch signals (``metrics.jsonl``: grad
  norm mean / max, loss spikes, largest update ratio) of a grid's runs beside their top-1.

Tables are :class:`.tables.Table` objects (rendered by :mod:`.tables`); plots use
the Agg helpers of :mod:`reproduce.report.plots`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reproduce.errors import SrvError
from reproduce.recipes.grids import Grid
from reproduce.report.tables import Entry, Table

__all__ = [
    "DEFAULT_IMAGES",
    "Diversity",
    "TargetSpec",
    "mean_cosine_similarity",
    "effective_rank",
    "singular_values",
    "token_layers",
    "token_diversity",
    "fixed_images",
    "measure_diversity",
    "resolve_target",
    "grid_targets",
    "diversity_tables",
    "plot_diversity",
    "stem_bn_stats",
    "stem_bn_table",
    "plot_stem_bn",
    "stability_rows",
    "stability_table",
    "plot_stability",
    "to_rich",
]

DEFAULT_IMAGES = 256
SMALL_GAMMA = 0.1


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


# --- targets: runs, checkpoints, untrained models, grid cells ------------------------------------


@dataclass
class TargetSpec:
    """Something to analyse: a run directory, a checkpoint or an untrained catalogue model."""

    label: str
    kind: str  # run | checkpoint | model
    source: str  # the path, or the model name
    config: dict[str, Any]  # the run config (RunConfig.to_dict())
    group: str = ""  # plot colour (a grid cell without its seed); default: the label
    seed: int = 0
    status: str = ""  # done / diverged / partial ... for runs
    top1: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def recipe(self, data_path: str | None = None) -> Any:
        from reproduce.training.config import RunConfig

        r = RunConfig.from_dict(self.config).recipe
        return dataclasses.replace(r, data_path=data_path) if data_path else r

    def load(self, weights: str = "last", device: str | torch.device = "cpu",
             num_classes: int | None = None) -> nn.Module:
        """The model, in eval mode (an untrained model is built with ``torch.manual_seed``)."""
        from reproduce.training.engine import load_checkpoint_model
        from reproduce.training.runnable import build_model

        if self.kind == "model":
            torch.manual_seed(self.seed)
            model = build_model(self.config, num_classes or 1000)
            return model.to(device).eval()
        model, _, which = load_checkpoint_model(self.source, weights, device)
        self.info.update(weights=which["weights"], checkpoint=which["checkpoint"],
                         epoch=which["epoch"])
        return model

    def describe(self) -> dict[str, Any]:
        out = {"label": self.label, "kind": self.kind, "source": self.source,
               "model": self.config.get("model"), "stem": self.config.get("stem") or None,
               "seed": self.config.get("seed", self.seed)}
        if self.kind != "model":
            out.update(status=self.status or None, top1=self.top1)
        return {**out, **self.info}


def _run_status(run_dir: Path) -> tuple[str, float | None]:
    from reproduce.experiments.cells import inspect_run

    status, info = inspect_run(run_dir)
    result = info.get("result") or {}
    return status, result.get("top1")


def resolve_target(text: str, recipe: str | None = None,
                   overrides: dict[str, Any] | None = None, seed: int = 0) -> TargetSpec:
    """A run directory, a ``.pt`` checkpoint, or a catalogue model name (untrained: built with
    ``seed`` and the recipe ``recipe``, default the model's own as for ``srv train``)."""
    path = Path(text)
    if path.is_dir():
        if not (path / "last.pt").exists() and not (path / "best.pt").exists():
            raise SrvError(f"{path} is a directory without a checkpoint (last.pt / best.pt): "
                           f"give a run directory that has trained at least one epoch")
        cfg = _checkpoint_config(path / ("last.pt" if (path / "last.pt").exists()
                                         else "best.pt"))
        status, top1 = _run_status(path)
        return TargetSpec(label=_config_label(cfg), kind="run", source=str(path), config=cfg,
                          seed=int(cfg.get("seed", 0)), status=status, top1=top1)
    if path.is_file():
        cfg = _checkpoint_config(path)
        return TargetSpec(label=f"{_config_label(cfg)} ({path.name})", kind="checkpoint",
                          source=str(path), config=cfg, seed=int(cfg.get("seed", 0)))
    from reproduce.models import UnknownModelError, get_entry
    from reproduce.training.config import resolve_config

    try:
        entry = get_entry(text)
    except UnknownModelError as err:
        raise SrvError(f"{text!r} is not a run directory, a checkpoint file or a catalogue "
                       f"model: {err}") from None
    cfg = resolve_config(entry.name, recipe,
                         {**(overrides or {}), "seed": seed})
    return TargetSpec(label=f"{entry.name} (untrained)", kind="model", source=entry.name,
                      config=cfg.to_dict(), seed=seed)


def _checkpoint_config(path: Path) -> dict[str, Any]:
    from reproduce.training.checkpoints import read_checkpoint

    return dict(read_checkpoint(path, mmap=True)["config"])


def _config_label(cfg: dict[str, Any]) -> str:
    label = str(cfg.get("name") or cfg.get("model"))
    if cfg.get("stem"):
        label += f" stem={cfg['stem']}"
    return label


def unique_labels(targets: Sequence[TargetSpec]) -> None:
    """Make labels unique (in place) by appending the config hash, then a counter."""
    seen: dict[str, int] = {}
    for t in targets:
        seen[t.label] = seen.get(t.label, 0) + 1
    for t in targets:
        if seen[t.label] > 1 and t.config.get("hash"):
            t.label = f"{t.label} [{t.config['hash'][:6]}]"
    count: dict[str, int] = {}
    for t in targets:
        count[t.label] = count.get(t.label, 0) + 1
        if count[t.label] > 1:
            t.label = f"{t.label} #{count[t.label]}"
    for t in targets:
        t.group = t.group or t.label


def cell_label(grid: Grid, labels: Iterable[tuple[str, str]]) -> str:
    """The display name of a cell: its axis values, shown as the grid names them."""
    return ", ".join(grid.axis(a).show(v) for a, v in labels)


def grid_targets(grid: Grid, runs_root: Path | str, weights: str = "last",
                 states: list[Any] | None = None) -> tuple[list[TargetSpec], list[str]]:
    """Every cell of ``grid`` whose run has the ``weights`` checkpoint, and a note per cell that
    has none (pending ...)."""
    from reproduce.experiments.cells import plan

    runs_root = Path(runs_root)
    if states is None:
        states = plan(grid, runs_root)
    multi_seed = len({s.cell.seed for s in states}) > 1
    targets: list[TargetSpec] = []
    skipped: list[str] = []
    for st in states:
        ckpt = st.run_dir / ("best.pt" if weights == "best" else "last.pt")
        group = cell_label(grid, st.cell.labels)
        if not ckpt.exists():
            skipped.append(f"{group} (seed {st.cell.seed}): {st.status}, no {ckpt.name}")
            continue
        result = st.info.get("result") or {}
        targets.append(TargetSpec(
            label=f"{group} (seed {st.cell.seed})" if multi_seed else group, kind="run",
            source=str(st.run_dir), config=st.cfg.to_dict(), group=group, seed=st.cell.seed,
            status=st.status, top1=result.get("top1"),
            info={"cell": st.cell.describe()}))
    return targets, skipped


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


_STYLES = ["-", "--", ":", "-."]


def _group_styles(targets: Sequence[TargetSpec]) -> tuple[list[str], list[Any], list[int]]:
    from reproduce.report.plots import _colors

    groups = list(dict.fromkeys(t.group or t.label for t in targets))
    seeds = sorted({t.seed for t in targets})
    return groups, _colors(len(groups)), seeds


def plot_diversity(targets: Sequence[TargetSpec], results: Sequence[Diversity],
                   path: Path | str, title: str = "") -> Path:
    """Per-layer curves of every target on one figure: cosine similarity (left) and effective
    rank (right); one colour per cell / model, one line style per seed."""
    from reproduce.report.plots import _figure, _save

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
        style = _STYLES[seeds.index(t.seed) % len(_STYLES)] if multi_seed else "-"
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
        note += f"; seeds {', '.join(map(str, seeds))} ({', '.join(_STYLES[: len(seeds)])})"
    fig.suptitle(f"{title}  [{note}]" if title else note, fontsize=10)
    return _save(fig, Path(path))


# --- stem BN scales ------------------------------------------------------------------------------


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


# --- stability ------------------------------------------------------------------------------------


def _max(values: Iterable[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and v == v]
    return max(vals) if vals else None


def stability_rows(grid: Grid, runs_root: Path | str, states: list[Any] | None = None
                   ) -> list[dict[str, Any]]:
    """One row per (cell, seed) of ``grid``: status, top-1 and the stability signals summed up
    over the logged epochs of ``metrics.jsonl`` (so diverged and unfinished runs have them too):
    grad-norm max (over steps) and mean (of the per-epoch means), loss spikes (sum), largest
    update ratio ``||w_new - w_old|| / ||w_old||``, plus the per-epoch ``metrics``."""
    from reproduce.experiments.cells import plan
    from reproduce.report.plots import read_metrics

    runs_root = Path(runs_root)
    if states is None:
        states = plan(grid, runs_root)
    out = []
    for st in states:
        metrics = read_metrics(st.run_dir)
        result = st.info.get("result") or {}
        means = [m["grad_norm_mean"] for m in metrics if m.get("grad_norm_mean") is not None]
        out.append({
            "cell": cell_label(grid, st.cell.labels),
            "labels": dict(st.cell.labels),
            "seed": st.cell.seed,
            "run": str(st.run_dir),
            "status": st.status,
            "epoch": st.info.get("epoch"),
            "epochs": st.epochs,
            "epochs_logged": len(metrics),
            "reason": st.info.get("reason"),
            "top1": result.get("top1"),
            "best_top1": result.get("best_top1"),
            "grad_norm_max": _max(m.get("grad_norm_max") for m in metrics),
            "grad_norm_mean": sum(means) / len(means) if means else None,
            "loss_spikes": sum(int(m.get("loss_spikes") or 0) for m in metrics)
            if metrics else None,
            "max_update_ratio": _max(m.get("max_update_ratio") for m in metrics),
            "diverged": st.status == "diverged",
            "metrics": metrics,
        })
    return out


def stability_table(grid: Grid, rows: Sequence[dict[str, Any]], provenance: str = "") -> Table:
    axes = [a.name for a in grid.axes]
    multi_seed = len({r["seed"] for r in rows}) > 1
    header = [grid.axis(a).title or a for a in axes] + (["seed"] if multi_seed else [])
    header += ["status", "top-1 (%)", "grad-norm max", "grad-norm mean", "loss spikes",
               "max update ratio"]
    align = ["l"] * (len(axes) + multi_seed) + ["l"] + ["r"] * 5
    body = []
    for r in rows:
        row = [Entry(text=grid.axis(a).show(r["labels"][a])) for a in axes]
        if multi_seed:
            row.append(Entry(text=str(r["seed"])))
        status = r["status"]
        if status == "diverged":
            status = f"diverged@e{r['epoch']}"
        elif status in ("partial", "running"):
            status = f"{status} e{r['epoch'] or 0}/{r['epochs']}"
        row.append(Entry(text=status))
        row.append(Entry(mean=r["top1"], fmt=".1f") if r["top1"] is not None
                   else Entry(text="—"))
        for key, fmt in (("grad_norm_max", ".3g"), ("grad_norm_mean", ".3g")):
            row.append(Entry(mean=r[key], fmt=fmt) if r[key] is not None else Entry(text="—"))
        row.append(Entry(text=str(r["loss_spikes"])) if r["loss_spikes"] is not None
                   else Entry(text="—"))
        row.append(Entry(mean=r["max_update_ratio"], fmt=".3g")
                   if r["max_update_ratio"] is not None else Entry(text="—"))
        body.append(row)
    notes = [
        "grad-norm: global L2 norm of the gradient before clipping, per step; max over all "
        "steps, mean of the per-epoch means (logged epochs only).",
        "loss spikes: steps whose loss exceeds spike_factor (recipe, default 2) x the running "
        "mean of the loss. max update ratio: largest ||w_new - w_old|| / ||w_old|| of a step.",
        "diverged@eN: non-finite loss or gradient in epoch N; its signals cover the epochs "
        "before it.",
    ]
    return Table(name=f"stability-{grid.name}", title=f"{grid.title}: training stability",
                 caption="Final top-1 beside the stability signals recorded during training.",
                 header=header, rows=body, align=align, notes=notes, provenance=provenance,
                 label=f"tab:stability-{grid.name}")


def plot_stability(rows: Sequence[dict[str, Any]], path: Path | str, title: str = ""
                   ) -> Path | None:
    """Per epoch: grad-norm mean, grad-norm max, largest update ratio (log scale) and val top-1,
    one colour per cell, one line style per seed; a diverged run ends in a cross."""
    from reproduce.report.plots import _colors, _figure, _save

    rows = [r for r in rows if r["metrics"]]
    if not rows:
        return None
    fig = _figure(11.0, 7.6 + 0.22 * math.ceil(len(rows) / 4))
    axes = fig.subplots(2, 2).ravel()
    groups = list(dict.fromkeys(r["cell"] for r in rows))
    colors = _colors(len(groups))
    seeds = sorted({r["seed"] for r in rows})
    panels = (("grad_norm_mean", "grad-norm mean per epoch", True),
              ("grad_norm_max", "grad-norm max per epoch", True),
              ("max_update_ratio", "largest update ratio per epoch", True),
              ("val_top1", "val top-1 (%)", False))
    labelled: set[str] = set()
    for r in rows:
        color = colors[groups.index(r["cell"])]
        style = _STYLES[seeds.index(r["seed"]) % len(_STYLES)]
        epochs = [m["epoch"] for m in r["metrics"]]
        label = None if r["cell"] in labelled else r["cell"]
        labelled.add(r["cell"])
        for ax, (key, _, _) in zip(axes, panels, strict=True):
            ys = [m.get(key) for m in r["metrics"]]
            ax.plot(epochs, ys, style, color=color, marker=".", markersize=4, linewidth=1.4,
                    alpha=0.9, label=label if key == "val_top1" else None)
            if r["diverged"] and epochs:
                ax.plot(epochs[-1:], ys[-1:], "x", color=color, markersize=9,
                        markeredgewidth=2)
    from matplotlib.ticker import MaxNLocator

    for ax, (_, text, log) in zip(axes, panels, strict=True):
        ax.set(xlabel="epoch", title=text)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    fig.legend(fontsize=8, loc="outside lower center", ncols=min(len(groups), 4))
    note = f"seeds {', '.join(map(str, seeds))} ({', '.join(_STYLES[: len(seeds)])})" \
        if len(seeds) > 1 else f"seed {seeds[0]}"
    if any(r["diverged"] for r in rows):
        note += "; x = last logged epoch of a diverged run"
    fig.suptitle(f"{title}  [{note}]" if title else note, fontsize=10)
    return _save(fig, Path(path))


# --- rendering on a terminal ---------------------------------------------------------------------


def to_rich(table: Table) -> Any:
    """A :class:`reproduce.report.tables.Table` as a rich table (bold markers dropped)."""
    from rich.table import Table as RichTable

    out = RichTable(title=table.title, caption=table.provenance or None, title_justify="left")
    for j, (head, align) in enumerate(zip(table.header, table.align, strict=True)):
        width = max([len(head)] + [len(row[j].markdown()) for row in table.rows])
        out.add_column(head, justify="left" if align == "l" else "right",
                       min_width=min(width, 40) if align == "l" else None)
    for row in table.rows:
        out.add_row(*[e.markdown().replace("**", "").replace("\\|", "|") for e in row])
    return out

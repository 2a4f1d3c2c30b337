"""Params and FLOPs of catalogue models with fvcore (1 FMA = 1 FLOP, as the paper and DeiT
count), cached per model and code version. Imports models and utils only; the counting rules and the
published numbers they are checked against are in docs/models.md.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from reproduce.errors import SrvError

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

__all__ = [
    "BREAKDOWN_NOTE",
    "CONVENTION",
    "PARTS",
    "Complexity",
    "FlopCountError",
    "count",
    "count_many",
    "count_model",
    "ignored_ops",
    "is_heavy_op",
    "latex_escape",
    "sdpa_flop_jit",
    "to_frame",
    "to_latex",
    "to_markdown",
    "versions",
    "write_tables",
    "write_text_atomic",
]

#: One line stating how the numbers were counted; every output of ``srv flops`` carries it.
CONVENTION = (
    "fvcore FlopCountAnalysis; 1 fused multiply-add = 1 FLOP; attention (fused SDPA: QK^T and "
    "AV) included; batch 1, eval mode; norms counted, bias adds and element-wise ops not"
)

#: Breakdown parts and the top-level ``VisionTransformer`` submodules that belong to each.
PARTS: dict[str, tuple[str, ...]] = {
    "stem": ("patch_embed",),
    "blocks": ("blocks",),
    "head": ("norm", "fc_norm", "attn_pool", "head_drop", "head"),
    "other": (),  # everything else: cls_token, pos_embed (+ its add), reg_token, norm_pre ...
}

SDPA_OP = "aten::scaled_dot_product_attention"

# An op whose name matches is a heavy op: fvcore must count it, or the count is wrong.
_HEAVY_OP = re.compile(
    r"^aten::_?("
    r"matmul|mm|bmm|baddbmm|addmm|addbmm|addmv|addr|mv|dot|vdot|inner|outer|ger|"
    r"linear|bilinear|einsum|tensordot|chain_matmul|linalg_multi_dot|"
    r".*conv.*|.*attention.*|.*_fft.*|fft_.*"
    r")$"
)


class FlopCountError(SrvError):
    """fvcore could not count a heavy op: the total would be silently too low."""


def is_heavy_op(op: str) -> bool:
    """Whether an aten op name (``aten::matmul``) is one whose FLOPs must be counted."""
    return bool(_HEAVY_OP.match(op))


@dataclass(frozen=True)
class Complexity:
    """Parameters and FLOPs of one model, with the stem / blocks / head / other breakdown.

    ``flops`` and ``params`` are exact integers; ``gflops`` (1e9 FMAs) and ``params_m`` (1e6) are
    the same numbers scaled. Fields are also readable as keys: ``rec["gflops"]``.
    """

    model: str
    img_size: int
    params: int
    flops: int
    stem_params: int
    blocks_params: int
    head_params: int
    other_params: int
    stem_flops: int
    blocks_flops: int
    head_flops: int
    other_flops: int
    #: element-wise ops fvcore has no handle for and that are (by convention) not counted
    unsupported_ignored: dict[str, int] = field(default_factory=dict)
    counter: str = "fvcore"
    convention: str = CONVENTION

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    def part_params_m(self, part: str) -> float:
        return getattr(self, f"{part}_params") / 1e6

    def part_gflops(self, part: str) -> float:
        return getattr(self, f"{part}_flops") / 1e9

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def to_dict(self) -> dict[str, Any]:
        """A flat dict: ``model``, ``params_m``, ``gflops``, ``img_size``, the breakdown in M / G
        (``stem_params_m``, ``stem_gflops``, ...), the exact integers and the convention."""
        out: dict[str, Any] = {
            "model": self.model,
            "params_m": self.params_m,
            "gflops": self.gflops,
            "img_size": self.img_size,
        }
        for part in PARTS:
            out[f"{part}_params_m"] = self.part_params_m(part)
            out[f"{part}_gflops"] = self.part_gflops(part)
        raw = asdict(self)
        for key in ("params", "flops"):
            out[key] = raw[key]
            out.update({f"{part}_{key}": raw[f"{part}_{key}"] for part in PARTS})
        out["unsupported_ignored"] = dict(self.unsupported_ignored)
        out["counter"] = self.counter
        out["convention"] = self.convention
        return out


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention(q, k, v, ...)``.

    With q ``(*, L, E)``, k ``(*, S, E)`` and v ``(*, S, Ev)``: QK^T is ``n*L*S*E`` and AV is
    ``n*L*S*Ev`` multiply-adds, ``n`` the product of q's batch and head dims. Softmax, scaling
    and masking are element-wise and not counted (as for every other element-wise op).
    """
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    if q is None or k is None or v is None:
        raise FlopCountError("scaled_dot_product_attention with inputs of unknown shape")
    n = math.prod(q[:-2])
    return n * q[-2] * k[-2] * q[-1] + n * q[-2] * k[-2] * v[-1]


def _import_fvcore() -> Any:
    """``fvcore.nn.FlopCountAnalysis``, without the FutureWarnings its import emits under
    torch >= 2.10 (``focal_loss.py`` JIT-scripts at import time)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script", category=FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    return FlopCountAnalysis


def _part_of(name: str) -> str:
    top = name.split(".", 1)[0]
    for part, modules in PARTS.items():
        if top in modules:
            return part
    return "other"


def count_model(
    model: nn.Module,
    img_size: int,
    *,
    name: str = "",
    in_chans: int = 3,
    attention: bool = True,
    strict: bool = True,
) -> Complexity:
    """Count the parameters and FLOPs of ``model`` on one ``in_chans x img_size`` image.

    Args:
        model: any module taking an image batch; it is put in eval mode (and left so).
        img_size: input height = width.
        name: the model name to put in the record.
        in_chans: input channels.
        attention: register the SDPA handle (``False`` only to show what fvcore misses).
        strict: raise :class:`FlopCountError` when fvcore has no handle for a heavy op.

    Returns:
        A :class:`Complexity` record.
    """
    import torch

    flop_count_analysis = _import_fvcore()
    model.eval()
    first = next(iter(model.parameters()), None)
    like = {"device": first.device, "dtype": first.dtype} if first is not None else {}
    x = torch.zeros(1, in_chans, img_size, img_size, **like)
    with torch.no_grad():
        fca = flop_count_analysis(model, (x,))
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        fca.tracer_warnings("none")
        if attention:
            fca.set_op_handle(SDPA_OP, sdpa_flop_jit)
        total = int(fca.total())
        by_module = fca.by_module()
        unsupported = dict(sorted(fca.unsupported_ops().items()))

    heavy = {op: n for op, n in unsupported.items() if is_heavy_op(op)}
    if heavy and strict:
        ops = ", ".join(f"{op} (x{n})" for op, n in heavy.items())
        raise FlopCountError(
            f"fvcore has no FLOP handle for {ops} in {name or type(model).__name__}: the count "
            f"would be too low; add a handle in reproduce/models/flops.py (see sdpa_flop_jit)"
        )

    flops = dict.fromkeys(PARTS, 0)
    for module, n in by_module.items():
        if module and "." not in module:  # top-level children only
            flops[_part_of(module)] += int(n)
    flops["other"] = total - flops["stem"] - flops["blocks"] - flops["head"]

    params = dict.fromkeys(PARTS, 0)
    for pname, p in model.named_parameters():
        params[_part_of(pname)] += p.numel()

    return Complexity(
        model=name or type(model).__name__,
        img_size=img_size,
        params=sum(params.values()),
        flops=total,
        **{f"{part}_params": params[part] for part in PARTS},
        **{f"{part}_flops": flops[part] for part in PARTS},
        unsupported_ignored=unsupported,
    )


def count(model_name: str, img_size: int | None = None, **model_kwargs: Any) -> Complexity:
    """Parameters (M) and GFLOPs of a catalogue model at its native input size or ``img_size``.

    Args:
        model_name: a catalogue name (``vit-s-conv``) or its timm name (``srv_vit_s_conv``).
        img_size: input size; ``None`` = the model's own (224, or 32 for ``vit-mini-*``).
        **model_kwargs: passed to :func:`reproduce.models.create` (``stem``, ``stem_width``, ...).

    Raises:
        UnknownModelError: ``model_name`` is not in the catalogue (with the closest names).
        FlopCountError: fvcore could not count a heavy op.
    """
    from reproduce.utils import cache

    key = _cache_key(model_name, img_size, model_kwargs)
    hit = cache.load("complexity", key)
    if hit is not None:
        return Complexity(**hit)
    import torch

    from reproduce.models import create, get_entry

    entry = get_entry(model_name)
    size = img_size or entry.img_size
    if img_size:
        model_kwargs["img_size"] = img_size
    with torch.random.fork_rng(devices=[]):  # building the model must not move the caller's RNG
        model = create(entry.name, **model_kwargs)
    rec = count_model(model, size, name=entry.name)
    cache.store("complexity", key, asdict(rec))
    return rec


@lru_cache(maxsize=1)
def models_code_version() -> str:
    """The version of everything a count depends on: the sources of :mod:`reproduce.models`
    (catalogue, stems, init, this counter) and the installed torch, timm and fvcore."""
    from pathlib import Path

    from reproduce.utils.cache import code_version

    return code_version(Path(__file__).parent.glob("*.py"), ("torch", "timm", "fvcore"))


def _cache_key(model_name: str, img_size: int | None, model_kwargs: dict[str, Any]
               ) -> dict[str, Any]:
    """The cache key of one count (JSON round-tripped, so it compares equal to a stored one)."""
    from reproduce.utils.cache import json_key

    return json_key({"code": models_code_version(), "model": model_name, "img_size": img_size,
                     "kwargs": model_kwargs})


def count_many(names: Iterable[str], img_size: int | None = None) -> list[Complexity]:
    """:func:`count` each name, after checking that all of them exist (fail before any work)."""
    known = set(catalogue_names())
    names = list(names)
    if not all(n in known for n in names):
        from reproduce.models import get_entry

        names = [get_entry(n).name for n in names]  # the closest names of an unknown one
    return [count(n, img_size) for n in names]


def catalogue_names() -> list[str]:
    """The catalogue's model names, in order (from the cache when this code version has listed
    them before: no timm import)."""
    from reproduce.utils import cache

    key = {"code": models_code_version()}
    names = cache.load("catalogue", key)
    if names is None:
        from reproduce.models import CATALOGUE

        names = list(CATALOGUE)
        cache.store("catalogue", key, names)
    return names


# --- tables ----------------------------------------------------------------------------------

_PART_LABELS = {"stem": "stem", "blocks": "blocks", "head": "head", "other": "other"}

#: What each breakdown part holds, for the notes under a table.
BREAKDOWN_NOTE = (
    "stem = patch_embed; blocks = transformer blocks; head = final norm, fc_norm and classifier; "
    "other = class token, position embedding (its add is element-wise, so 0 FLOPs)"
)


def to_frame(records: Iterable[Complexity]) -> Any:
    """A pandas DataFrame with one row per record: model, input, params (M), GFLOPs and the
    breakdown, in display units (floats, unrounded)."""
    import pandas as pd

    rows = []
    for rec in records:
        row: dict[str, Any] = {
            "model": rec.model,
            "input": f"{rec.img_size}x{rec.img_size}",
            "params (M)": rec.params_m,
            "GFLOPs": rec.gflops,
        }
        for part, label in _PART_LABELS.items():
            row[f"{label} params (M)"] = rec.part_params_m(part)
            row[f"{label} GFLOPs"] = rec.part_gflops(part)
        rows.append(row)
    return pd.DataFrame(rows)


def _float_format(column: str) -> str:
    return ".2f" if column.endswith("(M)") else ".3f"


def ignored_ops(records: Iterable[Complexity]) -> list[str]:
    """The element-wise ops fvcore skipped in any of the records (sorted)."""
    return sorted({op for rec in records for op in rec.unsupported_ignored})


def versions() -> str:
    """``torch x, timm y, fvcore z``: the software that produced a count."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("torch", "timm", "fvcore"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:  # pragma: no cover
            out.append(f"{pkg} ?")
    return ", ".join(out)


def to_markdown(records: list[Complexity]) -> str:
    """A Markdown document: a title, the convention and notes, and the table (via tabulate)."""
    df = to_frame(records)
    table = df.to_markdown(index=False, floatfmt=[_float_format(c) for c in df.columns])
    skipped = ", ".join(f"`{op}`" for op in ignored_ops(records)) or "none"
    return (
        "# Model complexity: parameters and FLOPs\n\n"
        f"Generated by `srv flops`. Convention: {CONVENTION}. "
        "GFLOPs = 10^9 fused multiply-adds per image at the input size shown.\n\n"
        f"Breakdown: {BREAKDOWN_NOTE}.\n\n"
        f"Element-wise ops fvcore does not count: {skipped}. Counted with {versions()}.\n\n"
        f"{table}\n"
    )


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text."""
    table = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
             "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
             "^": r"\textasciicircum{}"}
    return "".join(table.get(ch, ch) for ch in text)


def to_latex(records: list[Complexity], label: str = "tab:complexity") -> str:
    """A booktabs LaTeX table (pandas Styler; needs ``\\usepackage{booktabs}``), escaped, with a
    caption stating the counting convention and a label."""
    df = to_frame(records)
    numeric = [c for c in df.columns if c not in ("model", "input")]
    styler = (
        df.style.hide(axis="index")
        .format({c: f"{{:{_float_format(c)}}}" for c in numeric})
        .format(subset=["model", "input"], escape="latex")
        .format_index(escape="latex", axis=1)
    )
    caption = latex_escape(
        f"Parameters (M) and GFLOPs per image, counted with fvcore; 1 fused multiply-add = "
        f"1 FLOP; attention included; batch 1, eval mode. Breakdown: {BREAKDOWN_NOTE}."
    )
    body = styler.to_latex(
        hrules=True,
        caption=caption,
        label=label,
        position_float="centering",
        column_format="ll" + "r" * len(numeric),
    )
    return (
        "% Generated by `srv flops --write`; needs \\usepackage{booktabs}.\n"
        f"% {latex_escape(CONVENTION)}. Counted with {versions()}.\n"
        f"{body}"
    )


def write_text_atomic(path: Any, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`reproduce.utils.atomic.atomic_write_text`)."""
    from reproduce.utils.atomic import atomic_write_text

    atomic_write_text(path, text)


def write_tables(records: list[Complexity], directory: Any, stem: str = "complexity") -> list[Any]:
    """Write ``<directory>/<stem>.md`` and ``.tex``; return the two paths."""
    from pathlib import Path

    directory = Path(directory)
    paths = [directory / f"{stem}.md", directory / f"{stem}.tex"]
    write_text_atomic(paths[0], to_markdown(records))
    write_text_atomic(paths[1], to_latex(records))
    return paths

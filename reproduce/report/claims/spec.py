"""Does the claim reproduce? The paper's claims as data, checked against the finished runs.

A claim (``recipes/claims/wang2022.toml``, one ``[[claim]]`` each) is data, not a code path: the
claim in one line, an evidence query (a grid and its two arms, as axis labels), a statistic
from a fixed vocabulary (:data:`STATISTICS`) and a decision rule (``expect``: what the claim
predicts of arm a against arm b). :func:`evaluate` finds the evidence among the runs of a runs
directory, computes each statistic with :mod:`reproduce.report.stats`, adjusts the p-values of all
tested claims together (Holm) and gives each claim a verdict:

* **supported**: Holm-adjusted p < alpha and the effect points the way the claim says;
* **contradicted**: Holm-adjusted p < alpha and the effect points the other way (for ``cost``:
  the extra cost is above the claim's bound);
* **inconclusive**: neither, with the seeds per arm that would give the test ``power`` at the
  observed effect and spread (at alpha / number of tested claims, the strictest Holm step); an arm
  with one finished seed has no variance, so no test, no verdict and no estimate;
* **no evidence**: no finished run in an arm; the command that makes them is named.

Evidence: every preset of the claim's grid is searched (``srv ablate <grid> --preset P`` runs are
told apart by their config hash); the one with the most finished seeds in its smaller arm is used
and the others are listed. docs/claims.md says how each claim is made testable.
"""

from __future__ import annotations

import functools
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reproduce.errors import SrvError
from reproduce.report.records import RunIndex

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from reproduce.recipes.grids import Grid

__all__ = [
    "STATISTICS",
    "VERDICTS",
    "Claim",
    "ClaimSet",
    "Evidence",
    "Result",
    "Report",
    "claims_path",
    "load_claims",
    "evaluate",
    "render_markdown",
]

STATISTICS = ("difference", "spread", "seed-variance", "diversity", "cost")
EXPECT = ("greater", "less")
VERDICTS = ("supported", "contradicted", "inconclusive", "no evidence")
_CLAIM_KEYS = {"id", "text", "paper", "grid", "statistic", "a", "b", "expect", "metric", "axis",
               "models", "max_extra"}
_TOP_KEYS = {"alpha", "power", "claim", "design"}
_DESIGN_KEYS = {"grid", "preset", "scale", "seeds", "calibration", "calibration_seeds", "family",
                "main"}


# --- claims as data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, its evidence query, statistic and decision rule."""

    id: str
    text: str
    paper: str
    grid: str
    statistic: str
    a: dict[str, str] = field(default_factory=dict)
    b: dict[str, str] = field(default_factory=dict)
    expect: str = "greater"
    metric: str = "top1"
    axis: str | None = None
    models: tuple[str, str] | None = None
    max_extra: float | None = None


@dataclass(frozen=True)
class Design:
    """The pre-registered confirmatory design: where the main claims are tested (a grid at a
    preset and scale), with which seeds, and the calibration those were sized from (its seeds
    must not be among the confirmatory ones)."""

    grid: str
    preset: str
    scale: str
    seeds: tuple[int, ...]
    calibration: str
    calibration_seeds: tuple[int, ...]
    family: tuple[str, ...]
    main: tuple[str, ...]


@dataclass(frozen=True)
class ClaimSet:
    claims: list[Claim]
    alpha: float
    power: float
    path: Path
    design: Design | None = None


def claims_path() -> Path:
    """``$SRV_CLAIMS``, else the paper's claims, ``claims/wang2022.toml`` in the recipe
    directory (a folder of its own: every ``*.toml`` directly in ``recipes/`` is a recipe)."""
    env = os.environ.get("SRV_CLAIMS")
    if env:
        return Path(env)
    from reproduce.recipes.recipe import recipe_dir

    return recipe_dir() / "claims" / "wang2022.toml"


def load_claims(path: Path | str | None = None) -> ClaimSet:
    """Read and check a claims file (every key, statistic and rule; errors name the claim)."""
    path = Path(path) if path is not None else claims_path()
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SrvError(f"no claims file {path}: set SRV_CLAIMS or restore "
                       f"recipes/claims/wang2022.toml") from None
    except tomllib.TOMLDecodeError as err:
        raise SrvError(f"claims file {path} is not valid TOML: {err}") from None
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise SrvError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: "
                       f"{', '.join(sorted(_TOP_KEYS))}")
    alpha, power = float(doc.get("alpha", 0.05)), float(doc.get("power", 0.8))
    if not 0 < alpha < 1 or not 0 < power < 1:
        raise SrvError(f"{path}: alpha and power must be between 0 and 1")
    claims = []
    for i, spec in enumerate(doc.get("claim", [])):
        where = f"{path} [[claim]] {spec.get('id', f'#{i + 1}')}"
        unknown = set(spec) - _CLAIM_KEYS
        if unknown:
            raise SrvError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: "
                           f"{', '.join(sorted(_CLAIM_KEYS))}")
        missing = [k for k in ("id", "text", "grid", "statistic") if not spec.get(k)]
        if missing:
            raise SrvError(f"{where}: needs {', '.join(missing)}")
        statistic = spec["statistic"]
        if statistic not in STATISTICS:
            raise SrvError(f"{where}: statistic {statistic!r} is not one of "
                           f"{', '.join(STATISTICS)}")
        expect = spec.get("expect", "less" if statistic == "cost" else "greater")
        if expect not in EXPECT:
            raise SrvError(f"{where}: expect {expect!r} is not greater or less")
        if statistic == "cost":
            models = spec.get("models")
            if not (isinstance(models, list) and len(models) == 2) or "max_extra" not in spec:
                raise SrvError(f"{where}: a cost claim needs models = [with, without] and "
                               f"max_extra = <fraction>")
            claims.append(Claim(spec["id"], spec["text"], spec.get("paper", ""), spec["grid"],
                                statistic, expect=expect, models=(models[0], models[1]),
                                max_extra=float(spec["max_extra"])))
            continue
        if not isinstance(spec.get("a"), dict) or not isinstance(spec.get("b"), dict):
            raise SrvError(f"{where}: needs the two arms a = {{ axis = label }} and b = {{...}}")
        if statistic == "spread" and not spec.get("axis"):
            raise SrvError(f"{where}: a spread claim needs axis = '<the axis to spread over>'")
        claims.append(Claim(spec["id"], spec["text"], spec.get("paper", ""), spec["grid"],
                            statistic, {k: str(v) for k, v in spec["a"].items()},
                            {k: str(v) for k, v in spec["b"].items()}, expect,
                            spec.get("metric", "top1"), spec.get("axis")))
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise SrvError(f"{path}: claim ids must be unique")
    design = _load_design(doc.get("design"), path, ids)
    return ClaimSet(claims, alpha, power, path, design)


def _load_design(spec: Any, path: Path, ids: list[str]) -> Design | None:
    """The ``[design]`` table, checked: known keys, integer seeds, no calibration seed reused,
    claim ids that exist."""
    if spec is None:
        return None
    where = f"{path} [design]"
    if not isinstance(spec, dict):
        raise SrvError(f"{where}: must be a table ([design] with grid, preset, seeds, ...)")
    unknown = set(spec) - _DESIGN_KEYS
    if unknown:
        raise SrvError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; allowed: "
                       f"{', '.join(sorted(_DESIGN_KEYS))}")
    missing = [k for k in ("grid", "preset", "seeds") if not spec.get(k)]
    if missing:
        raise SrvError(f"{where}: needs {', '.join(missing)}")
    seeds, cal = spec["seeds"], spec.get("calibration_seeds", [])
    for name, value in (("seeds", seeds), ("calibration_seeds", cal)):
        if not (isinstance(value, list) and all(isinstance(s, int) for s in value)):
            raise SrvError(f"{where}: {name} must be a list of integers")
    reused = sorted(set(seeds) & set(cal))
    if reused:
        raise SrvError(f"{where}: seeds {', '.join(map(str, reused))} were used in calibration; "
                       f"choose confirmatory seeds disjoint from calibration_seeds")
    family, main = list(spec.get("family", [])), list(spec.get("main", []))
    unknown_ids = sorted(set(family + main) - set(ids))
    if unknown_ids:
        raise SrvError(f"{where}: no claim {', '.join(unknown_ids)}; claims: {', '.join(ids)}")
    return Design(str(spec["grid"]), str(spec["preset"]), str(spec.get("scale", "")),
                  tuple(seeds), str(spec.get("calibration", "")), tuple(cal), tuple(family),
                  tuple(main))


# --- evidence ------------------------------------------------------------------------------------


@dataclass
class Evidence:
    """What a claim was tested on: a grid at a preset, its two arms and their per-seed values."""

    grid: str
    preset: str
    a_name: str
    b_name: str
    values_a: list[float]
    values_b: list[float]
    seeds_a: list[int]
    seeds_b: list[int]
    runs_a: list[str] = field(default_factory=list)
    runs_b: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # other presets that have evidence
    commits: list[str] = field(default_factory=list)
    resolution: float = 0.0  # the metric's step: 100 / val images for a top-1

    @property
    def n(self) -> tuple[int, int]:
        return len(self.values_a), len(self.values_b)

    def describe(self) -> str:
        na, nb = self.n
        seeds = sorted(set(self.seeds_a) | set(self.seeds_b))
        text = (f"{self.grid} / {self.preset}: {self.a_name} vs {self.b_name}; seeds "
                f"{_seed_text(seeds)} (n = {na} + {nb})")
        if self.others:
            text += "; also " + ", ".join(self.others)
        return text


def _seed_text(seeds: list[int]) -> str:
    if not seeds:
        return "none"
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _arm(grid: Grid, df: pd.DataFrame, sel: dict[str, str]) -> tuple[pd.DataFrame, str] | None:
    """The rows of one arm and its display name; None when this preset lacks a label. The
    axis names were checked against the grid by :func:`_find_evidence`."""
    from reproduce.report.records import _match

    labels, names = [], []
    for axis_name, label in sel.items():
        axis = grid.axis(axis_name)
        if label in ("@first", "@last"):
            label = axis.labels[0 if label == "@first" else -1]
        if label not in axis.labels:
            return None
        labels.append(label)
        names.append(axis.show(label) if len(sel) == 1 else
                     f"{axis.title or axis_name} {axis.show(label)}")
    return df[_match(df, list(sel), labels)], ", ".join(names)


def _chance(sub: pd.DataFrame) -> float:
    """Top-1 (%) of a guess: what a diverged run is worth on a spread."""
    from reproduce.report.records import _num_classes

    return 100.0 / _num_classes(sub.iloc[0]) if len(sub) else 0.0


def _per_seed(claim: Claim, grid: Grid, rows: pd.DataFrame) -> tuple[list[float], list[int],
                                                                     list[str]]:
    """One value per seed for the claim's statistic (the diversity is measured later)."""
    done = rows[rows["status"] == "done"]
    if claim.statistic in ("difference", "seed-variance", "diversity"):
        done = done.dropna(subset=[claim.metric]).sort_values("seed")
        return ([float(v) for v in done[claim.metric]], [int(s) for s in done["seed"]],
                list(done["run"]))
    # spread: every value of the axis finished (or diverged) for the seed
    from reproduce.report.records import axis_column

    col = axis_column(claim.axis or "")  # the axis was checked by _find_evidence
    width = len(grid.axis(claim.axis or "").labels)
    chance = _chance(rows)
    values, seeds, runs = [], [], []
    for seed, sub in rows.groupby("seed"):
        ok = sub[sub["status"].isin(["done", "diverged"])]
        if len(ok) < width or ok[col].nunique() < width:
            continue
        accs = [float(r[claim.metric]) if r["status"] == "done" else chance
                for _, r in ok.iterrows()]
        if any(a != a for a in accs):
            continue
        values.append(max(accs) - min(accs))
        seeds.append(int(seed))
        runs += list(ok["run"])
    return values, seeds, runs


def _find_evidence(claim: Claim, index: RunIndex, presets: list[str] | None,
                   force: bool) -> tuple[Evidence | None, str]:
    """The evidence with the most seeds in its smaller arm over the grid's presets."""
    from reproduce.recipes.grids import load_grid
    from reproduce.report.records import check_consistent

    grid0 = load_grid(claim.grid)
    names = {a.name for a in grid0.axes}
    for axis_name in [*claim.a, *claim.b, *([claim.axis] if claim.axis else [])]:
        if axis_name not in names:
            raise SrvError(f"claim {claim.id!r}: grid {grid0.name!r} has no axis {axis_name!r} "
                           f"(its axes: {', '.join(sorted(names))}); fix the claims file")
    candidates = []
    for preset in grid0.presets:
        if presets and preset not in presets:
            continue
        found = index.frame(claim.grid, preset)
        if found is None:
            continue
        grid, df = found
        arm_a, arm_b = _arm(grid, df, claim.a), _arm(grid, df, claim.b)
        if arm_a is None or arm_b is None:
            continue
        (rows_a, name_a), (rows_b, name_b) = arm_a, arm_b
        va, sa, ra = _per_seed(claim, grid, rows_a)
        vb, sb, rb = _per_seed(claim, grid, rows_b)
        if not va and not vb:
            continue
        both = df.loc[rows_a.index.union(rows_b.index)]
        check_consistent(both, f"{claim.grid} ({preset}) for claim {claim.id}", force)
        ev = Evidence(claim.grid, preset, name_a, name_b, va, vb, sa, sb, ra, rb)
        ev.commits = sorted({str(c)[:7] for c in both["git_commit"].dropna()})
        n_val = both["n_val"].dropna()
        ev.resolution = 100.0 / float(n_val.max()) if len(n_val) else 0.0
        div = [int((r["status"] == "diverged").sum()) for r in (rows_a, rows_b)]
        if any(div) and claim.statistic != "spread":
            ev.notes.append(f"diverged runs (not in the values): {div[0]} + {div[1]}")
        default = preset == grid0.default_preset
        candidates.append(((min(ev.n), sum(ev.n), default), ev))
    if not candidates:
        return None, f"no finished runs of both arms; run: {_hint(claim)}"
    candidates.sort(key=lambda c: c[0], reverse=True)
    best = candidates[0][1]
    best.others = [f"{ev.preset} (n = {ev.n[0]} + {ev.n[1]})" for _, ev in candidates[1:]]
    return best, ""


def _hint(claim: Claim) -> str:
    """The ``srv ablate`` command that makes a claim's evidence: the quick preset when it has
    both arms (the README's main job), else the grid's default preset, with 3 seeds."""
    from reproduce.recipes.grids import load_grid

    grid0 = load_grid(claim.grid)
    for preset in ("quick", grid0.default_preset):
        if preset not in grid0.presets:
            continue
        grid = load_grid(claim.grid, preset=preset)
        labels = {a.name: a.labels for a in grid.axes}
        if all(v.startswith("@") or v in labels.get(k, []) for arm in (claim.a, claim.b)
               for k, v in arm.items()):
            seeds = "" if preset == "quick" else " --seeds 0-2"
            return f"srv ablate {claim.grid} --preset {preset}{seeds}"
    return f"srv ablate {claim.grid} --seeds 0-2"


def _last_block_erank(targets: list[Any], n_images: int = 256) -> tuple[list[float], str]:
    """Each target's mean effective rank of the patch tokens after its last block, on the fixed
    val batch of ``srv analyze diversity`` (the last column of its table; only that layer is
    measured here, which is what the claim reads)."""
    import torch

    from reproduce.report.diversity import _image_key, effective_rank, fixed_images, token_layers

    cache: dict[Any, Any] = {}
    out: list[float] = []
    layer = "the last block"
    for t in targets:
        r = t.recipe()
        key = _image_key(r)  # the batch srv analyze diversity uses for this data
        if key not in cache:
            cache[key] = fixed_images(r, n_images)
        images, num_classes, _ = cache[key]
        model = t.load("last", "cpu", num_classes)
        layer, module, drop = token_layers(model)[-1]
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
    return out, layer


def _measure_diversity(claim: Claim, ev: Evidence, index: RunIndex) -> None:
    """Replace the evidence's values by each run's effective rank after the last block."""
    from reproduce.report.diversity import DEFAULT_IMAGES
    from reproduce.report.targets import grid_targets

    grid, _ = index.frame(claim.grid, ev.preset)  # type: ignore[misc]
    wanted = set(ev.runs_a) | set(ev.runs_b)
    states = [s for s in index.states(claim.grid, ev.preset) if s.cfg.run_name in wanted]
    targets, _ = grid_targets(grid, index.runs_root, "last", states=states)
    values, layer = _last_block_erank(targets, DEFAULT_IMAGES)
    erank = {t.source: v for t, v in zip(targets, values, strict=True)}
    va: list[float] = []
    vb: list[float] = []
    sa: list[int] = []
    sb: list[int] = []
    for st in states:
        value = erank.get(str(st.run_dir))
        if value is None:
            continue
        if st.cfg.run_name in ev.runs_a:
            va.append(value)
            sa.append(st.cell.seed)
        else:
            vb.append(value)
            sb.append(st.cell.seed)
    ev.values_a, ev.values_b, ev.seeds_a, ev.seeds_b = va, vb, sa, sb
    ev.notes.append(f"after {layer}, {DEFAULT_IMAGES} val images")


# --- results -------------------------------------------------------------------------------------


@dataclass
class Result:
    """A claim's verdict with its evidence and numbers."""

    claim: Claim
    evidence: Evidence | None
    verdict: str = "no evidence"
    test: Any = None  # stats.Difference | stats.VarianceRatio | None
    p_holm: float | None = None
    seeds_needed: int | None = None
    statistic: str = ""
    reason: str = ""
    cost: dict[str, Any] = field(default_factory=dict)

    @property
    def p(self) -> float | None:
        return None if self.test is None else float(self.test.p)

    def verdict_text(self) -> str:
        if self.verdict in ("supported", "contradicted"):
            return f"**{self.verdict}**"
        if self.verdict == "inconclusive":
            return f"inconclusive: {self.reason}"
        return f"no evidence: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        ev = self.evidence
        return {
            "id": self.claim.id, "claim": self.claim.text, "verdict": self.verdict,
            "statistic": self.statistic, "p": self.p, "p_holm": self.p_holm,
            "seeds_needed": self.seeds_needed, "reason": self.reason or None,
            "evidence": None if ev is None else {
                "grid": ev.grid, "preset": ev.preset, "a": ev.a_name, "b": ev.b_name,
                "values_a": ev.values_a, "values_b": ev.values_b, "seeds_a": ev.seeds_a,
                "seeds_b": ev.seeds_b, "runs_a": ev.runs_a, "runs_b": ev.runs_b,
                "others": ev.others,
                "notes": ev.notes},
            **({"cost": self.cost} if self.cost else {}),
        }


@dataclass
class Report:
    results: list[Result]
    alpha: float
    power: float
    family: int  # tested claims (Holm family size)
    runs_root: Path
    path: Path

    def text(self) -> str:
        return render_markdown(self)


def _statistic_text(claim: Claim, ev: Evidence, test: Any) -> str:
    if claim.statistic == "seed-variance":
        ratio = ("inf" if math.isinf(test.ratio) else f"{test.ratio:.2g}")
        ci = ("" if math.isinf(test.ratio) else
              f" [{test.low:.2g}, {test.high:.2g}]")
        return (f"sd {test.sd_a:.1f} vs {test.sd_b:.1f}, variance ratio {ratio}{ci}; "
                f"F test p {_p(test.p)}")
    unit = {"difference": f"{claim.metric.replace('top1', 'top-1')}",
            "spread": f"spread of top-1 over {claim.axis} (max - min)",
            "diversity": "effective rank"}[claim.statistic]
    return (f"{unit}: {test.mean_a:.1f} vs {test.mean_b:.1f}, Δ {test.diff:+.1f} "
            f"[{test.low:.1f}, {test.high:.1f}]; {test.describe()}, p {_p(test.p)}")


def _test(claim: Claim, ev: Evidence) -> Any:
    from reproduce.report import stats

    if claim.statistic == "seed-variance":
        return stats.variance_ratio(ev.values_a, ev.values_b, resolution=ev.resolution)
    return stats.welch(ev.values_a, ev.values_b)


def _claimed_direction(claim: Claim, test: Any) -> int:
    """+1 when the observed effect points the way the claim says, -1 the other way, 0 none."""
    if claim.statistic == "seed-variance":
        effect = 0.0 if test.ratio == 1 else (1.0 if test.ratio > 1 else -1.0)
    else:
        effect = float(math.copysign(1.0, test.diff)) if test.diff != 0 else 0.0
    want = 1.0 if claim.expect == "greater" else -1.0
    return int(effect * want)


@functools.lru_cache(maxsize=16)
def _count(model: str) -> Any:
    """fvcore's count of a catalogue model (an architecture property: counted once a process)."""
    from reproduce.models.flops import count

    return count(model)


def _cost(claim: Claim) -> Result:
    with_m, without_m = claim.models or ("", "")
    a, b = _count(with_m), _count(without_m)
    extra_p, extra_f = a.params_m / b.params_m - 1, a.gflops / b.gflops - 1
    bound = claim.max_extra or 0.0
    ok = extra_p <= bound and extra_f <= bound
    ev = Evidence(claim.grid, "catalogue", with_m, without_m, [], [], [], [],
                  notes=["fvcore count of the architecture; no seeds involved"])
    text = (f"{extra_p:+.1%} params ({a.params_m:.2f} vs {b.params_m:.2f} M), {extra_f:+.1%} "
            f"GFLOPs ({a.gflops:.2f} vs {b.gflops:.2f}); bound +{bound:.0%}")
    return Result(claim, ev, "supported" if ok else "contradicted", statistic=text,
                  cost={"params_m": [a.params_m, b.params_m], "gflops": [a.gflops, b.gflops],
                        "extra_params": extra_p, "extra_gflops": extra_f, "max_extra": bound})


def evaluate(runs_root: Path | str = "runs", claims: ClaimSet | None = None,
             ids: list[str] | None = None, grids: list[str] | None = None,
             presets: list[str] | None = None, force: bool = False,
             diversity: bool = True) -> Report:
    """Every claim (or those named by ``ids`` / on ``grids``) against the runs in ``runs_root``.

    ``presets`` limits the evidence to those presets; ``diversity=False`` skips the claims that
    load checkpoints. The p-values of all tested claims are Holm-adjusted together.
    """
    from reproduce.report import stats

    cs = claims or load_claims()
    chosen = [c for c in cs.claims if (not ids or c.id in ids) and (not grids or c.grid in grids)]
    if ids:
        unknown = sorted(set(ids) - {c.id for c in cs.claims})
        if unknown:
            raise SrvError(f"no claim {', '.join(unknown)} in {cs.path}; claims: "
                           f"{', '.join(c.id for c in cs.claims)}")
    index = RunIndex(runs_root)
    results: list[Result] = []
    for claim in chosen:
        if claim.statistic == "cost":
            results.append(_cost(claim))
            continue
        if claim.statistic == "diversity" and not diversity:
            results.append(Result(claim, None, reason="skipped (--no-diversity)"))
            continue
        ev, why = _find_evidence(claim, index, presets, force)
        if ev is None:
            results.append(Result(claim, None, reason=why))
            continue
        if claim.statistic == "diversity":
            _measure_diversity(claim, ev, index)
        result = Result(claim, ev)
        na, nb = ev.n
        if min(na, nb) == 0:
            missing = ev.a_name if na == 0 else ev.b_name
            result.reason = (f"no finished run of {missing} has a checkpoint (last.pt) to "
                             f"measure" if claim.statistic == "diversity" and
                             (ev.runs_a if na == 0 else ev.runs_b) else
                             f"no finished run of {missing}; run: {_hint(claim)}")
        elif min(na, nb) < 2:
            result.verdict = "inconclusive"
            result.reason = (f"n = {na} + {nb}: one seed has no variance, so no test and no "
                             f"estimate; run at least 2 seeds per arm (srv ablate {claim.grid} "
                             f"--preset {ev.preset} --seeds 0-2)")
        else:
            result.test = _test(claim, ev)
            if result.test is None:  # both arms without any variance (seed-variance)
                result.verdict = "inconclusive"
                result.reason = "neither arm varies across seeds: no F test"
            else:
                result.statistic = _statistic_text(claim, ev, result.test)
        results.append(result)

    tested = [r for r in results if r.test is not None]
    for r, p in zip(tested, stats.holm([r.p for r in tested]), strict=True):
        r.p_holm = p
    m = max(1, len(tested))
    for r in tested:
        direction = _claimed_direction(r.claim, r.test)
        r.statistic += f", Holm p {_p(r.p_holm)}"
        if r.p_holm is not None and r.p_holm < cs.alpha and direction != 0:
            r.verdict = "supported" if direction > 0 else "contradicted"
            continue
        r.verdict = "inconclusive"
        level = cs.alpha / m
        if r.claim.statistic == "seed-variance":
            need = stats.variance_seeds_needed(r.test.ratio, level, cs.power)
        else:
            need = stats.seeds_needed(r.test.diff, r.test.sd_a, r.test.sd_b, level, cs.power)
        r.seeds_needed = need
        where = f"power {cs.power:g} at α = {cs.alpha:g}/{m}"
        if need is None:
            r.reason = (f"more than {stats.MAX_SEEDS} seeds per arm would be needed ({where}): "
                        f"the observed effect is about 0")
        else:
            r.reason = f"about {need} seeds per arm would decide it ({where})"
    return Report(results, cs.alpha, cs.power, len(tested), Path(runs_root), cs.path)


def _p(p: float | None) -> str:
    """``= 0.034`` or ``< 0.001``."""
    from reproduce.report.stat_columns import fmt_p

    text = fmt_p(p)
    return text.replace("<", "< ") if text.startswith("<") else f"= {text}"


# --- rendering -----------------------------------------------------------------------------------


def render_markdown(report: Report, only: set[str] | None = None) -> str:
    """The claims report: one line per claim (claim, evidence, statistic, verdict) and how to
    read it. ``only``: show just these claims (the decision rule still names the whole family)."""
    import pandas as pd

    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    shown = [r for r in report.results if only is None or r.claim.id in only]
    rows = []
    for r in shown:
        ev = r.evidence
        evidence = ("—" if ev is None else
                    ev.describe() if ev.preset != "catalogue" else
                    f"{ev.a_name} vs {ev.b_name} (fvcore, 224x224; no runs needed)")
        if ev is not None and ev.notes and ev.preset != "catalogue":
            evidence += "; " + "; ".join(ev.notes)
        rows.append([r.claim.id, esc(r.verdict_text()), esc(r.claim.text), esc(evidence),
                     esc(r.statistic or "—")])
    frame = pd.DataFrame(rows, columns=["id", "verdict", "claim", "evidence", "statistic"])
    body = frame.to_markdown(index=False, disable_numparse=True)
    counts = {v: sum(r.verdict == v for r in shown) for v in VERDICTS}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    if only is not None:
        summary += f" (the {len(shown)} claims this grid tests; all {len(report.results)}: " \
                   f"srv claims, tables/claims.md)"
    commits = sorted({c for r in report.results if r.evidence for c in r.evidence.commits})
    lines = [
        "## Does the claim reproduce?", "",
        f"Wang et al. 2022's claims (PAPER.md section 1; {report.path.name}) checked against the "
        f"finished runs in {report.runs_root}: {summary}.", "",
        body, "",
        f"Decision rule: the p-values of the {report.family} tested claim"
        f"{'s' if report.family != 1 else ''} are Holm-adjusted together; supported = adjusted "
        f"p < {report.alpha:g} with the effect in the claimed direction, contradicted = adjusted "
        f"p < {report.alpha:g} against it; otherwise inconclusive, with the seeds per arm that "
        f"would give power {report.power:g} at the observed effect and spread (at α = "
        f"{report.alpha:g}/{max(1, report.family)}). An arm with n = 1 has no variance: no test, "
        f"no verdict. Evidence: the grid preset with the most seeds per arm (others listed). "
        f"Intervals: 95%, Welch (difference of means) or F (variance ratio). "
        f"Code: git {', '.join(commits) or 'unknown'}. How each claim is made testable: "
        f"docs/claims.md.",
    ]
    return "\n".join(lines) + "\n"

"""The paper's claims as data: a claims file (``recipes/claims/wang2022.toml``) read and checked.

A claim (one ``[[claim]]``) is the claim in one line, an evidence query (a grid and its two
arms, as axis labels), a statistic from a fixed vocabulary (:data:`STATISTICS`) and a decision
rule (``expect``: what the claim predicts of arm a against arm b), and the ``preset`` its
evidence comes from with the calibration that chose that scale (``calibration_seeds``). The
file's ``[design]`` table pre-registers the confirmatory run (grid, preset, scale, seeds, the Holm
family and the main claims). One rule covers both: a confirmatory preset's seeds are disjoint
from every calibration seed of its grid (:func:`calibration_seeds`). docs/claims.md says how each
claim is made testable.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from reproduce.errors import SrvError

__all__ = ["STATISTICS", "VERDICTS", "LINKS", "Verdict", "Claim", "ClaimSet", "Design",
           "Scale", "calibration_seeds", "claims_path", "claims_paths", "load_claims"]

STATISTICS = ("difference", "spread", "seed-variance", "diversity", "cost", "paired-edf")
EXPECT = ("greater", "less")
LINKS = ("identity", "logit")  # the scale a spread is measured on (issue 28 (3))


class Verdict(StrEnum):
    """What a claim's check concluded (docs/claims.md, "Reading the verdicts")."""

    SUPPORTED = "supported"  # Holm-adjusted p < alpha, effect in the claimed direction
    CONTRADICTED = "contradicted"  # Holm-adjusted p < alpha, effect against the claim
    INCONCLUSIVE = "inconclusive"  # tested, not decided: the seeds that would decide it
    NOT_TESTABLE = "not testable"  # pre-registered: this scale cannot test the claim
    NO_EVIDENCE = "no evidence"  # the runs it needs have not finished
    NOT_TESTED = "not tested"  # stated numbers, no test (cost: a property of the architecture)


VERDICTS = tuple(v.value for v in Verdict)
_CLAIM_KEYS = {"id", "text", "paper", "grid", "statistic", "a", "b", "expect", "metric", "axis",
               "models", "max_extra", "also", "preset", "calibration", "calibration_seeds",
               "link", "not_testable", "min_trained"}
_TOP_KEYS = {"alpha", "power", "claim", "design", "scale"}
_SCALE_KEYS = {"name", "label", "regime", "presets", "omitted"}
_DESIGN_KEYS = {"grid", "preset", "scale", "seeds", "calibration", "calibration_seeds", "family",
                "main"}


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
    #: a cost claim's second count of its first model with these model arguments (the verdict's
    #: sensitivity to an assumption, e.g. ``{"stem_width": 32}``)
    also: dict[str, int | str] = field(default_factory=dict)
    #: the preset the evidence comes from (srv claims --run trains it), and the calibration
    #: that chose its scale: a record of runs and their seeds (disjoint from the preset's)
    preset: str | None = None
    calibration: str = ""
    calibration_seeds: tuple[int, ...] = ()
    #: a spread's link: ``logit`` measures each seed's spread on logit(top-1) (seed variance
    #: scales with p(1 - p), so equal spreads at 90% and 42% are not equal stability)
    link: str = "identity"
    #: pre-registered "not testable" at this scale, with the reason (no test, not in the family)
    not_testable: str = ""
    #: a spread claim is not testable when an arm's mean top-1 at some setting keeps less than
    #: this share of its best setting's above-chance top-1 (that setting did not train: the
    #: spread would measure a broken run, issue 28 (3))
    min_trained: float | None = None
    #: the claims file's scale (``[scale] name``): ``srv claims --run --scale`` trains its preset
    scale: str = ""


@dataclass(frozen=True)
class Scale:
    """The scale a claims file tests at: its name and label in the report, whether it is the
    paper's regime (both stems trained, a few points apart), the presets its evidence may come
    from (none: every preset but another scale's) and the claims it leaves out, with why."""

    name: str = ""
    label: str = ""
    regime: bool = False
    presets: tuple[str, ...] = ()
    omitted: dict[str, str] = field(default_factory=dict)


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
    scale: Scale = field(default_factory=Scale)


def claims_paths() -> list[Path]:
    """``$SRV_CLAIMS`` (one file), else every claims file of the paper in ``recipes/claims/``:
    one per scale (the quick scale's ``wang2022.toml`` first)."""
    if os.environ.get("SRV_CLAIMS"):
        return [claims_path()]
    folder = claims_path().parent
    return sorted(folder.glob("*.toml"), key=lambda p: (p != claims_path(), p.name))


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
            also = spec.get("also", {})
            if not isinstance(also, dict) or not set(also) <= {"stem_width", "stem"}:
                raise SrvError(f"{where}: also = {{ stem_width = N }} (or stem = KIND) is the "
                               f"second count of the first model; got {also!r}")
            claims.append(Claim(spec["id"], spec["text"], spec.get("paper", ""), spec["grid"],
                                statistic, expect=expect, models=(models[0], models[1]),
                                max_extra=float(spec["max_extra"]), also=dict(also)))
            continue
        if not isinstance(spec.get("a"), dict) or not isinstance(spec.get("b"), dict):
            raise SrvError(f"{where}: needs the two arms a = {{ axis = label }} and b = {{...}}")
        link = str(spec.get("link", "identity"))
        if link not in LINKS or (link != "identity" and statistic != "spread"):
            raise SrvError(f"{where}: link {link!r}: a spread claim takes link = "
                           f"{' or '.join(repr(v) for v in LINKS)}")
        if statistic in ("spread", "paired-edf") and not spec.get("axis"):
            raise SrvError(f"{where}: a {statistic} claim needs axis = '<the axis to "
                           f"{'spread over' if statistic == 'spread' else 'pair by'}>'")
        claims.append(Claim(spec["id"], spec["text"], spec.get("paper", ""), spec["grid"],
                            statistic, {k: str(v) for k, v in spec["a"].items()},
                            {k: str(v) for k, v in spec["b"].items()}, expect,
                            spec.get("metric", "top1"), spec.get("axis"),
                            preset=str(spec["preset"]) if spec.get("preset") else None,
                            calibration=str(spec.get("calibration", "")),
                            calibration_seeds=tuple(_seed_list(
                                spec.get("calibration_seeds", []), where,
                                "calibration_seeds")),
                            link=link, not_testable=str(spec.get("not_testable", "")),
                            min_trained=(float(spec["min_trained"]) if "min_trained" in spec
                                         else None)))
    ids = [c.id for c in claims]
    if len(set(ids)) != len(ids):
        raise SrvError(f"{path}: claim ids must be unique")
    design = _load_design(doc.get("design"), path, claims)
    _check_fresh_seeds(claims, design, path)
    scale = _load_scale(doc.get("scale"), path)
    return ClaimSet([replace(c, scale=scale.name) for c in claims], alpha, power, path, design,
                    scale)


def _load_scale(spec: Any, path: Path) -> Scale:
    """The ``[scale]`` table (optional): name, label, regime, presets, omitted."""
    if spec is None:
        return Scale()
    where = f"{path} [scale]"
    if not isinstance(spec, dict) or set(spec) - _SCALE_KEYS:
        raise SrvError(f"{where}: a table with keys {', '.join(sorted(_SCALE_KEYS))}")
    omitted = spec.get("omitted", {})
    if not isinstance(omitted, dict):
        raise SrvError(f"{where}: omitted = {{ claim-id = \"why\" }}")
    return Scale(str(spec.get("name", "")), str(spec.get("label", "")),
                 bool(spec.get("regime", False)), tuple(map(str, spec.get("presets", []))),
                 {str(k): str(v) for k, v in omitted.items()})


def _seed_list(value: Any, where: str, name: str) -> list[int]:
    """A list of integer seeds, else a one-line error naming the key."""
    if not (isinstance(value, list) and all(isinstance(s, int) for s in value)):
        raise SrvError(f"{where}: {name} must be a list of integers")
    return list(value)


def calibration_seeds(claims: list[Claim], design: Design | None, grid: str) -> set[int]:
    """Every seed a calibration of ``grid`` used (the claims' ``calibration_seeds`` and the
    [design] table's): the seeds no confirmatory preset of that grid may use."""
    seeds = {s for c in claims if c.grid == grid for s in c.calibration_seeds}
    if design is not None and design.grid == grid:
        seeds |= set(design.calibration_seeds)
    return seeds


def _check_fresh_seeds(claims: list[Claim], design: Design | None, path: Path) -> None:
    """The one calibration rule, for the [design] table and every claim's ``preset``: the
    confirmatory seeds are none of the grid's calibration seeds (the scale was chosen on those;
    reusing them would test on the data the design was fitted to). A claim's preset must exist."""
    checks: list[tuple[str, str, str, tuple[int, ...]]] = []
    if design is not None:
        checks.append((f"{path} [design]", design.grid, design.preset, design.seeds))
    for claim in claims:
        if claim.preset is None:
            continue
        from reproduce.recipes.grids import load_grid

        where = f"{path} [[claim]] {claim.id}"
        grid = load_grid(claim.grid)
        if claim.preset not in grid.presets:
            raise SrvError(f"{where}: grid {grid.name!r} has no preset {claim.preset!r} (its "
                           f"presets: {', '.join(grid.presets)})")
        seeds = tuple(load_grid(claim.grid, preset=claim.preset).seeds)
        checks.append((where, claim.grid, claim.preset, seeds))
    for where, grid_name, preset, seeds in checks:
        reused = sorted(set(seeds) & calibration_seeds(claims, design, grid_name))
        if reused:
            raise SrvError(f"{where}: seeds {', '.join(map(str, reused))} of {grid_name} / "
                           f"{preset} were used in calibration; choose confirmatory seeds "
                           f"disjoint from calibration_seeds")


def _load_design(spec: Any, path: Path, claims: list[Claim]) -> Design | None:
    """The ``[design]`` table, checked: known keys, integer seeds, claim ids that exist, and a
    family that is every claim a test can decide (Holm's family in :func:`~.verdicts.decide`:
    every claim but ``cost`` and those pre-registered not testable). Its seeds are checked by
    :func:`_check_fresh_seeds`."""
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
    seeds = _seed_list(spec["seeds"], where, "seeds")
    cal = _seed_list(spec.get("calibration_seeds", []), where, "calibration_seeds")
    ids = [c.id for c in claims]
    family, main = list(spec.get("family", [])), list(spec.get("main", []))
    unknown_ids = sorted(set(family + main) - set(ids))
    if unknown_ids:
        raise SrvError(f"{where}: no claim {', '.join(unknown_ids)}; claims: {', '.join(ids)}")
    testable = [c.id for c in claims if c.statistic != "cost" and not c.not_testable]
    missing = [i for i in testable if i not in family]
    if family and missing:
        raise SrvError(f"{where}: family lacks {', '.join(missing)}; Holm's family is every "
                       f"claim a test decides: list {', '.join(testable)}")
    return Design(str(spec["grid"]), str(spec["preset"]), str(spec.get("scale", "")),
                  tuple(seeds), str(spec.get("calibration", "")), tuple(cal), tuple(family),
                  tuple(main))

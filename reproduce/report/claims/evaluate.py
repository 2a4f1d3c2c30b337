"""Every claim against a set of run records: evidence, test, Holm, verdict (:func:`evaluate`)."""

from __future__ import annotations

from reproduce.errors import SrvError
from reproduce.report.claims.evidence import find_evidence, hint, measure_diversity
from reproduce.report.claims.render import Report
from reproduce.report.claims.spec import Claim, ClaimSet, load_claims
from reproduce.report.claims.verdicts import (
    Result,
    cost_result,
    decide,
    no_test_reason,
    run_test,
    statistic_text,
)
from reproduce.report.records import RecordIndex

__all__ = ["evaluate"]


def _result(claim: Claim, index: RecordIndex, presets: list[str] | None, force: bool,
            measure: bool) -> tuple[Result, bool]:
    """The claim's result before the Holm step, and whether it is a family member whose p is
    unknown (testable, but its measurement was skipped)."""
    ev, why = find_evidence(claim, index, presets, force)
    if ev is None:
        return Result(claim, None, reason=why), False
    if claim.statistic == "diversity" and not measure:
        testable = min(ev.n) >= 2
        return Result(claim, None, reason="skipped (--no-diversity)"
                      + ("; in the Holm family at p = 1" if testable else "")), testable
    if claim.statistic == "diversity":
        measure_diversity(claim, ev, index)
    result = Result(claim, ev)
    na, nb = ev.n
    if min(na, nb) == 0:
        missing = ev.a_name if na == 0 else ev.b_name
        result.reason = (f"no finished run of {missing} has a checkpoint (last.pt) to measure"
                         if claim.statistic == "diversity" and (ev.runs_a if na == 0 else
                                                                ev.runs_b) else
                         f"no finished run of {missing}; run: {hint(claim)}")
    elif min(na, nb) < 2:
        result.verdict = "inconclusive"
        result.reason = (f"one paired draw, so no test; run more draws (srv ablate {claim.grid} "
                         f"--preset {ev.preset} --samples 16)" if claim.statistic == "paired-edf"
                         else f"n = {na} + {nb}: one seed has no variance, so no test and no "
                         f"estimate; run the preset's seeds (srv ablate {claim.grid} "
                         f"--preset {ev.preset})")
    else:
        result.test = run_test(claim, ev)
        if result.test is None:
            result.verdict = "inconclusive"
            result.reason = no_test_reason(ev, claim.statistic)
        else:
            result.statistic = statistic_text(claim, ev, result.test)
    return result, False


def evaluate(index: RecordIndex, claims: ClaimSet | None = None,
             ids: list[str] | None = None, grids: list[str] | None = None,
             presets: list[str] | None = None, force: bool = False,
             diversity: bool = True) -> Report:
    """Every claim against the run records of ``index``; ``ids`` / ``grids`` only choose which are
    shown. The Holm family is every claim that gets a test: ``presets`` limits the evidence, but
    a claim testable only at another preset still joins the family with its best evidence there;
    ``diversity=False`` skips loading checkpoints, and a testable diversity claim then counts in
    the family at p = 1 (so the others' adjusted p-values can only be larger, never smaller)."""
    cs = claims or load_claims()
    if ids:
        unknown = sorted(set(ids) - {c.id for c in cs.claims})
        if unknown:
            raise SrvError(f"no claim {', '.join(unknown)} in {cs.path}; claims: "
                           f"{', '.join(c.id for c in cs.claims)}")
    shown = None if not ids and not grids else {
        c.id for c in cs.claims if (not ids or c.id in ids) and (not grids or c.grid in grids)}
    results: list[Result] = []
    hidden: list[Result] = []  # family members tested outside the chosen presets
    untested = 0
    for claim in cs.claims:
        if claim.statistic == "cost":
            results.append(cost_result(claim))
            continue
        result, unknown_p = _result(claim, index, presets, force, diversity)
        untested += unknown_p
        if presets and result.test is None and not unknown_p:
            other, other_unknown = _result(claim, index, None, force, diversity)
            if other.test is not None:
                hidden.append(other)
            untested += other_unknown
        results.append(result)
    family = decide(results + hidden, cs, untested)
    return Report(results, cs.alpha, cs.power, family, index.source, cs.path, shown,
                  cs.design)

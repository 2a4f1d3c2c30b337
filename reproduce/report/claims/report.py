"""The claims report: every claim evaluated against a set of run records (:func:`evaluate`:
evidence, test, Holm, verdict), and its Markdown (one line per claim: verdict with its scale,
claim, evidence, statistic; then the decision rule it was reached by)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reproduce.errors import SrvError
from reproduce.report.claims.evidence import find_evidence, hint, measure_diversity
from reproduce.report.claims.spec import (
    Claim,
    ClaimSet,
    Design,
    Scale,
    Verdict,
    load_claims,
)
from reproduce.report.claims.verdicts import (
    Result,
    cost_result,
    decide,
    no_test_reason,
    run_test,
    statistic_text,
    untrained_setting,
)
from reproduce.report.records import RecordIndex

__all__ = ["Report", "evaluate", "render_markdown", "decision_rule"]


@dataclass
class Report:
    """Every claim's result (the Holm family is over all of them) and which ones to show."""

    results: list[Result]
    alpha: float
    power: float
    family: int  # tested claims (Holm family size), whatever is shown
    source: str  # where the records came from: "results/", "the runs in runs/"
    path: Path
    shown_ids: set[str] | None = None  # None: all
    design: Design | None = None
    scale: Scale = Scale()
    #: pre-registered family members with no test yet (their grids not run), each in the Holm
    #: family at p = 1: the rest of the run can confirm the other verdicts, never reverse them
    pending: tuple[str, ...] = ()

    @property
    def tested(self) -> int:
        """The family members that got a test."""
        return self.family - len(self.pending)

    @property
    def shown(self) -> list[Result]:
        return [r for r in self.results if self.shown_ids is None or r.claim.id in self.shown_ids]

    def text(self) -> str:
        return render_markdown(self)

    def evidence_run_ids(self) -> set[str]:
        """The distinct runs the claims' evidence rests on."""
        return {run for r in self.results if r.evidence
                for run in r.evidence.runs_a + r.evidence.runs_b}


def _design_text(report: Report) -> str:
    """The pre-registered design, and whether the evidence is the confirmatory run."""
    d = report.design
    if d is None:
        return ""
    seeds = ", ".join(map(str, d.seeds))
    used = {s for r in report.results if r.evidence and r.evidence.preset == d.preset
            and r.evidence.grid == d.grid for s in r.evidence.seeds_a + r.evidence.seeds_b}
    overlap = sorted(used & set(d.calibration_seeds))
    status = (f" This report's {d.grid} / {d.preset} evidence uses calibration seeds "
              f"{', '.join(map(str, overlap))}: it is not the confirmatory run." if overlap else "")
    return (f" Pre-registered design ({report.path.name} [design]): {d.grid} / {d.preset} "
            f"({d.scale}), seeds {seeds}, disjoint from the calibration's "
            f"({d.calibration}); main claims {', '.join(d.main)}.{status}")


def _paired_text(report: Report) -> str:
    """The paired-by-draw rule, when a paired-edf claim was tested (docs/claims.md)."""
    if not any(r.claim.statistic == "paired-edf" and r.test is not None for r in report.results):
        return ""
    return (" A paired-edf claim pairs the two arms' top-1 errors by random (lr, wd) draw: "
            "Wilcoxon's signed-rank test, its undecided verdict with the draws that would decide "
            "it (a normal approximation over Wilcoxon's efficiency 3 / π, not a simulation).")


def decision_rule(report: Report) -> str:
    """How the verdicts were reached (the Markdown report's last paragraph; ``srv claims
    --explain`` on a terminal): the family, Holm, alpha, what each verdict means, the design."""
    commits = sorted({c for r in report.results if r.evidence for c in r.evidence.commits})
    fam, tested = report.family, report.tested
    if report.pending:
        head = (f"Decision rule: the p-values of the {tested} tested claim"
                f"{'s' if tested != 1 else ''} and of the {len(report.pending)} pre-registered "
                f"ones not run yet ({', '.join(report.pending)}; each at p = 1, so that the rest "
                f"of the run can only confirm the verdicts, never reverse one) ")
    elif fam:
        head = f"Decision rule: the p-values of all {fam} tested claim{'s' if fam != 1 else ''} "
    else:
        head = "Decision rule (no claim has a test yet): the p-values of the tested claims "
    return (
        head
        + f"are Holm-adjusted together, whichever are shown (cost is stated, never tested; a "
        f"claim pre-registered not testable at this scale is not in the family); "
        f"supported = adjusted "
        f"p < {report.alpha:g} with the effect in the claimed direction, contradicted = adjusted "
        f"p < {report.alpha:g} against it; otherwise inconclusive, with the seeds per arm that "
        f"would give power {report.power:g} at the observed effect and spread (post-hoc, by "
        f"simulating Welch's test, at α = {report.alpha:g}/{max(1, fam)}). A verdict is about "
        f"the scale in its cell, not about ImageNet. An arm with n = 1 has no variance: no test, "
        f"no verdict. Final-epoch top-1 is tested (the paper reports peak accuracy; best-epoch "
        f"top-1 is shown beside it). A diverged run counts as chance-level top-1. Variances are "
        f"floored at the resolution of top-1 (h² / 12, h = 100 / val images). The F test at a "
        f"few seeds per arm is descriptive. Evidence: of the grid presets with a test, the "
        f"claim's own, else the one with the most seeds per arm (others listed). Intervals: "
        f"95%, Welch (difference of means) or F (variance ratio).{_paired_text(report)}"
        f"{_design_text(report)} Code: "
        f"{'git ' + ', '.join(commits) if commits else 'no git commit recorded'}. How each "
        f"claim is made testable: docs/claims.md.")


def render_markdown(report: Report, only: set[str] | None = None,
                    heading: str = "## Does the claim reproduce?") -> str:
    """The claims report for the shown claims (``only`` narrows them further); the decision rule
    names the whole family, which filters never change."""
    import pandas as pd

    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    shown = [r for r in report.shown if only is None or r.claim.id in only]
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
    counts = {v.value: sum(r.verdict == v for r in shown) for v in Verdict}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    if len(shown) != len(report.results):
        summary += (f" (the {len(shown)} claims shown; all {len(report.results)}: srv claims, "
                    f"tables/claims.md)")
    lines = [
        heading, "",
        f"Wang et al. 2022's claims (docs/paper.md §1; {report.path.name}) checked against "
        f"{report.source}: {summary}.", "",
        body, "",
        decision_rule(report),
    ]
    return "\n".join(lines) + "\n"


def _result(claim: Claim, index: RecordIndex, presets: list[str] | None, force: bool,
            measure: bool, exclude: frozenset[str] = frozenset()) -> tuple[Result, bool]:
    """The claim's result before the Holm step, and whether it is a family member whose p is
    unknown (testable, but its measurement was skipped)."""
    if claim.not_testable:
        return Result(claim, None, Verdict.NOT_TESTABLE, reason=claim.not_testable), False
    ev, why = find_evidence(claim, index, presets, force, exclude)
    if ev is None:
        return Result(claim, None, reason=why), False
    broken = untrained_setting(claim, ev)
    if broken and min(ev.n) >= 2:
        return Result(claim, ev, Verdict.NOT_TESTABLE, reason=broken), False
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
        result.verdict = Verdict.INCONCLUSIVE
        result.reason = (f"one paired draw, so no test; run more draws (srv ablate {claim.grid} "
                         f"--preset {ev.preset} --samples 16)" if claim.statistic == "paired-edf"
                         else f"n = {na} + {nb}: one seed has no variance, so no test and no "
                         f"estimate; run the preset's seeds (srv ablate {claim.grid} "
                         f"--preset {ev.preset})")
    else:
        result.test = run_test(claim, ev)
        if result.test is None:
            result.verdict = Verdict.INCONCLUSIVE
            result.reason = no_test_reason(ev, claim.statistic)
        else:
            result.statistic = statistic_text(claim, ev, result.test)
    return result, False


def evaluate(index: RecordIndex, claims: ClaimSet | None = None,
             ids: list[str] | None = None, grids: list[str] | None = None,
             presets: list[str] | None = None, force: bool = False,
             diversity: bool = True, exclude: frozenset[str] = frozenset()) -> Report:
    """Every claim against the run records of ``index``; ``ids`` / ``grids`` only choose which are
    shown. The Holm family is every claim that gets a test: ``presets`` limits the evidence, but
    a claim testable only at another preset still joins the family with its best evidence there;
    ``diversity=False`` skips loading checkpoints, and a testable diversity claim then counts in
    the family at p = 1 (so the others' adjusted p-values can only be larger, never smaller).
    Evidence comes from the claims file's scale presets when it names them, else from any
    preset but ``exclude`` (another scale's)."""
    cs = claims or load_claims()
    if cs.scale.presets and not presets:
        presets = list(cs.scale.presets)
    if ids:
        unknown = sorted(set(ids) - {c.id for c in cs.claims})
        if unknown:
            raise SrvError(f"no claim {', '.join(unknown)} in {cs.path}; claims: "
                           f"{', '.join(c.id for c in cs.claims)}")
    shown = None if not ids and not grids else {
        c.id for c in cs.claims if (not ids or c.id in ids) and (not grids or c.grid in grids)}
    results: list[Result] = []
    hidden: list[Result] = []  # family members tested outside the chosen presets
    pending: list[str] = []  # design family members with no test yet (at p = 1)
    family_ids = set(cs.design.family) if cs.design else set()
    untested = 0
    for claim in cs.claims:
        if claim.statistic == "cost":
            results.append(cost_result(claim))
            continue
        result, unknown_p = _result(claim, index, presets, force, diversity, exclude)
        decided, decided_unknown = result, unknown_p  # what the family counts for the claim
        if (presets and not cs.scale.presets and result.test is None and not unknown_p):
            decided, decided_unknown = _result(claim, index, None, force, diversity, exclude)
            if decided.test is not None:
                hidden.append(decided)
        untested += decided_unknown
        if claim.id in family_ids and _pending(decided, decided_unknown):
            pending.append(claim.id)
        results.append(result)
    family = decide(results + hidden, cs, untested + len(pending))
    return Report(results, cs.alpha, cs.power, family, index.source, cs.path, shown,
                  cs.design, cs.scale, tuple(pending))


def _pending(result: Result, unknown_p: bool) -> bool:
    """Whether a member of the design's family (``[design] family``) has no test yet (no runs,
    or one seed an arm): a partial confirmatory run keeps the pre-registered family size,
    counting each at p = 1 (Holm's adjusted p-values only fall as a p-value falls, so the rest
    of the run can confirm the part's verdicts, never reverse one; issue 28 (5)). The result is
    the one the family counts (with ``--preset`` on a claims file without scale presets, the
    claim's evidence at any preset when the chosen ones have no test). A claim found not
    testable leaves the family, as the claims file's rule says; a skipped measurement
    (``unknown_p``) is counted at p = 1 already."""
    return (result.test is None and not unknown_p
            and result.verdict in (Verdict.NO_EVIDENCE, Verdict.INCONCLUSIVE))

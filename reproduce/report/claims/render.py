"""The claims report: one line per claim (verdict with its scale, claim, evidence, statistic)
and the decision rule it was reached by, as markdown."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reproduce.report.claims.spec import VERDICTS, Design
from reproduce.report.claims.verdicts import Result

__all__ = ["Report", "render_markdown"]


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

    @property
    def shown(self) -> list[Result]:
        return [r for r in self.results if self.shown_ids is None or r.claim.id in self.shown_ids]

    def text(self) -> str:
        return render_markdown(self)

    def evidence_runs(self) -> int:
        """The distinct runs the claims' evidence rests on."""
        return len({run for r in self.results if r.evidence
                    for run in r.evidence.runs_a + r.evidence.runs_b})


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


def render_markdown(report: Report, only: set[str] | None = None) -> str:
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
    counts = {v: sum(r.verdict == v for r in shown) for v in VERDICTS}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    if len(shown) != len(report.results):
        summary += (f" (the {len(shown)} claims shown; all {len(report.results)}: srv claims, "
                    f"tables/claims.md)")
    commits = sorted({c for r in report.results if r.evidence for c in r.evidence.commits})
    fam = report.family
    lines = [
        "## Does the claim reproduce?", "",
        f"Wang et al. 2022's claims (docs/paper.md §1; {report.path.name}) checked against "
        f"{report.source}: {summary}.", "",
        body, "",
        (f"Decision rule: the p-values of all {fam} tested claim{'s' if fam != 1 else ''} "
         if fam else "Decision rule (no claim has a test yet): the p-values of the tested "
         "claims ")
        + f"are Holm-adjusted together, whichever are shown (cost is stated, never tested); "
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
        f"claim is made testable: docs/claims.md.",
    ]
    return "\n".join(lines) + "\n"

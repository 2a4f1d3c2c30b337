"""The claims at every scale: one claims file per scale (``recipes/claims/*.toml``), each its own
pre-registered family, evaluated on the same records and reported side by side (issue 28 (4)).

A scale that names its presets (``[scale] presets``) takes evidence from those only; the others
take it from any preset but those, so no run is evidence at two scales.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reproduce.report.claims.report import Report, evaluate, render_markdown
from reproduce.report.claims.spec import ClaimSet, Verdict, load_claims
from reproduce.report.records import RecordIndex

__all__ = ["load_scales", "evaluate_scales", "render_scales", "diversity_grids", "label",
           "evidence"]


def load_scales(paths: list[Path]) -> list[ClaimSet]:
    """Every claims file, read and checked, in the given order."""
    return [load_claims(p) for p in paths]


def diversity_grids(sets: list[ClaimSet]) -> set[str]:
    """The grids whose runs a diversity claim measures (their checkpoints are read)."""
    return {c.grid for cs in sets for c in cs.claims if c.statistic == "diversity"}


def evaluate_scales(index: RecordIndex, sets: list[ClaimSet], **kw: Any) -> list[Report]:
    """Each scale's report on the same records; a scale without its own presets never takes
    another scale's as evidence."""
    reports = []
    for cs in sets:
        others = frozenset(p for other in sets if other is not cs for p in other.scale.presets)
        reports.append(evaluate(index, cs, exclude=others, **kw))
    return reports


def label(report: Report) -> str:
    """The scale's label in a report (its ``[scale] label``, else its name or file stem)."""
    scale = report.scale
    return scale.label or scale.name or report.path.stem


def evidence(reports: list[Report]) -> tuple[int, int]:
    """The tested claims and the distinct runs the reports rest on together (the hidden line of
    claims.md that :func:`reproduce.commands._records.write_claims` compares)."""
    return (sum(r.tested for r in reports),
            len({run for r in reports for run in r.evidence_run_ids()}))


def _cell(report: Report, claim_id: str) -> str:
    """A claim's verdict at one scale, in a few words (the overview table)."""
    if claim_id in report.scale.omitted:
        return f"— ({report.scale.omitted[claim_id]})"
    result = next((r for r in report.results if r.claim.id == claim_id), None)
    if result is None:
        return "—"
    if result.verdict in (Verdict.SUPPORTED, Verdict.CONTRADICTED):
        return f"**{result.verdict}** (Holm p {_p(result.p_holm)})"
    if result.verdict is Verdict.INCONCLUSIVE and result.p_holm is not None:
        return f"inconclusive (Holm p {_p(result.p_holm)})"
    if result.verdict is Verdict.NO_EVIDENCE:
        return ("no evidence yet (runs pending; in the Holm family at p = 1)"
                if claim_id in report.pending else "no evidence yet (runs pending)")
    return str(result.verdict)


def _p(p: float | None) -> str:
    from reproduce.report.stats import fmt_p

    return fmt_p(p)


def render_scales(reports: list[Report]) -> str:
    """One report (its Markdown as before), or several: an overview table (claim x scale, the
    paper's regime named) and then each scale's full report under its own heading."""
    if len(reports) == 1:
        return render_markdown(reports[0])
    import pandas as pd

    ids: list[str] = []
    for rep in reports:
        ids += [r.claim.id for r in rep.shown if r.claim.id not in ids]
        ids += [i for i in rep.scale.omitted if i not in ids]
    columns = ["id", *[f"{label(rep)}{' (the paper’s regime)' if rep.scale.regime else ''}"
                       for rep in reports]]
    rows = [[i, *[_cell(rep, i).replace("|", "\\|") for rep in reports]] for i in ids]
    overview = pd.DataFrame(rows, columns=columns).to_markdown(index=False,
                                                                disable_numparse=True)
    regime = next((rep for rep in reports if rep.scale.regime), None)
    lines = [
        "## Does the claim reproduce?", "",
        "Each claim at every scale, each scale its own pre-registered design and Holm family "
        "(docs/claims.md, \"Two scales\")."
        + (f" The paper's regime, two trained models a few points apart, is "
           f"{label(regime)}; the other scales are labelled for what they test."
           if regime else ""), "",
        overview, "",
    ]
    for rep in reports:
        lines.append(render_markdown(rep, heading=f"### {label(rep)}"))
    return "\n".join(lines)

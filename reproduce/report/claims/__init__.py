"""Does the claim reproduce? The paper's claims as data, checked against the finished runs.

:mod:`.spec` reads the claims file (``recipes/claims/wang2022.toml``: claims, decision rule and
the pre-registered design), :mod:`.evidence` finds each claim's evidence among the runs,
:mod:`.verdicts` tests it and decides (Holm over every tested claim), :mod:`.report` runs them
over a set of run records and writes the report; docs/claims.md says how each claim is made
testable.
"""

from __future__ import annotations

from reproduce.report.claims.evidence import Evidence
from reproduce.report.claims.report import Report, evaluate, render_markdown
from reproduce.report.claims.spec import (
    STATISTICS,
    VERDICTS,
    Claim,
    ClaimSet,
    Design,
    Scale,
    Verdict,
    calibration_seeds,
    claims_path,
    claims_paths,
    load_claims,
)
from reproduce.report.claims.verdicts import Result

__all__ = [
    "STATISTICS",
    "VERDICTS",
    "Claim",
    "ClaimSet",
    "Design",
    "Scale",
    "Verdict",
    "Evidence",
    "Result",
    "Report",
    "calibration_seeds",
    "claims_path",
    "claims_paths",
    "load_claims",
    "evaluate",
    "render_markdown",
]

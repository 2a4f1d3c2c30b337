"""The verdicts in plain words: one sentence per claim, and the terminal's table of them.

The Markdown report (:mod:`.report`) carries every number and the decision rule; a person at a
terminal gets, per claim, its id, its verdict and one sentence saying what the runs show and how
often chance alone would show it (issue 29 (5)). The decision rule is ``srv claims --explain``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from reproduce.report.claims.spec import Verdict

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

    from reproduce.report.claims.report import Report
    from reproduce.report.claims.verdicts import Result

__all__ = ["VERDICT_STYLE", "chance_text", "sentence", "rich_table"]

VERDICT_STYLE = {Verdict.SUPPORTED: "bold green", Verdict.CONTRADICTED: "bold red",
                 Verdict.INCONCLUSIVE: "yellow", Verdict.NOT_TESTABLE: "magenta",
                 Verdict.NO_EVIDENCE: "dim", Verdict.NOT_TESTED: "cyan"}


def chance_text(p: float | None, what: str = "a difference this large") -> str:
    """How often chance alone gives an effect this large, from a (Holm-adjusted) p-value:
    ``less than 1 time in 1,000``, ``about 1 time in 20``; at p >= 0.5, ``often``."""
    if p is None:
        return ""
    if p < 0.001:
        return f"{what} arises by chance less than 1 time in 1,000"
    if p >= 0.5:
        return f"{what} often arises by chance"
    return f"{what} arises by chance about 1 time in {round(1 / p):,}"


def _effect(r: Result) -> tuple[str, str]:
    """What the runs show, and the noun of its chance phrase."""
    ev, t, c = r.evidence, r.test, r.claim
    assert ev is not None and t is not None
    a, b = ev.a_name, ev.b_name
    if c.statistic == "paired-edf":
        word = "lower" if t.diff < 0 else "higher"
        return (f"over {t.n} shared (lr, wd) draws, {a}'s top-1 error is {abs(t.diff):.1f} "
                f"points {word} than {b}'s on average", "a difference this large")
    if c.statistic == "seed-variance":
        return (f"{a}'s top-1 varies across seeds with sd {t.sd_a:.1f} points, {b}'s with "
                f"{t.sd_b:.1f}", "a variance ratio this far from 1")
    if c.statistic == "diversity":
        return (f"{a}'s patch tokens have effective rank {t.mean_a:.1f}, {b}'s {t.mean_b:.1f}",
                "a difference this large")
    if c.statistic == "spread":
        if c.link == "logit":
            return (f"from its best {c.axis} to its worst, {a}'s top-1 drops {t.mean_a:.2f} on "
                    f"the logit scale, {b}'s {t.mean_b:.2f}", "a difference this large")
        return (f"over {c.axis}, {a}'s top-1 spreads {t.mean_a:.1f} points, {b}'s "
                f"{t.mean_b:.1f}", "a difference this large")
    word = "better" if t.diff > 0 else "worse"
    return (f"{a} is {abs(t.diff):.1f} points {word} than {b} ({t.mean_a:.1f}% vs "
            f"{t.mean_b:.1f}% top-1)", "a difference this large")


def sentence(r: Result) -> str:
    """One plain sentence for a claim's result: what the runs show, how often chance would
    show it (the Holm-adjusted p), and what would decide it when nothing does yet."""
    if r.verdict is Verdict.NOT_TESTED:
        extra = r.cost
        return (f"{extra['extra_params']:+.1%} parameters and {extra['extra_gflops']:+.1%} "
                f"FLOPs over patchify on DeiT-S: stated, not tested (the paper gives no figure "
                f"to test against)") if extra else r.reason
    if r.test is None:
        return r.reason or r.verdict_text()
    effect, noun = _effect(r)
    text = f"{effect}; {chance_text(r.p_holm, noun)}"
    if r.verdict is Verdict.CONTRADICTED:
        text += ": the opposite of the claim"
    elif r.verdict is Verdict.INCONCLUSIVE:
        unit = "paired draws" if r.claim.statistic == "paired-edf" else "seeds per arm"
        text += (f": not rare enough to decide (about {r.seeds_needed} {unit} would)"
                 if r.seeds_needed else
                 f": not rare enough to decide, and too small an effect for any affordable "
                 f"number of {unit}")
    return text[0].upper() + text[1:] + "."


def rich_table(report: Report, title: str = "") -> Table:
    """The terminal's view of a report: id, verdict, one sentence per shown claim."""
    from rich.table import Table

    table = Table(title=title or None, title_justify="left", show_lines=True, expand=False)
    table.add_column("claim", style="bold", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("what the runs show", ratio=1)
    for r in report.shown:
        table.add_row(r.claim.id, f"[{VERDICT_STYLE[r.verdict]}]{r.verdict}[/]", sentence(r))
    return table

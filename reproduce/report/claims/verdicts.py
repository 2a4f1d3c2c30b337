"""From evidence to a verdict: each claim's test, the Holm adjustment over the family, and the
seeds a claim that is not decided would need.

* **supported**: Holm-adjusted p < alpha and the effect points the way the claim says;
* **contradicted**: Holm-adjusted p < alpha and the effect points the other way;
* **inconclusive**: neither, with the seeds per arm that would give the test ``power`` at the
  observed effect and spread (post-hoc, at alpha / family size, the strictest Holm step; noisy
  at n = 3 because the observed effect and spread are); an arm with one finished seed has no
  variance, so no test, no verdict and no estimate;
* **not testable**: pre-registered for this scale (``not_testable``), or an arm's setting did not
  train (``min_trained``): no test, not in the family;
* ``cost`` is **not tested**: its numbers are stated (the paper publishes no figure to test
  against, and a bound of ours would be a verdict of ours).

The Holm family is every claim that got a test from the runs, whatever a command shows.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

from reproduce.report.claims.evidence import Evidence
from reproduce.report.claims.spec import Claim, ClaimSet, Verdict

__all__ = ["Result", "run_test", "decide", "cost_result", "p_text", "untrained_setting",
           "EDF_MARGIN"]

#: a paired-edf claim's dispersion: each stem's share of draws within this many points of its
#: own best top-1 error (issue 28 (3): how much of the (lr, wd) space trains near the best)
EDF_MARGIN = 5.0


@dataclass
class Result:
    """A claim's verdict with its evidence and numbers."""

    claim: Claim
    evidence: Evidence | None
    verdict: Verdict = Verdict.NO_EVIDENCE
    test: Any = None  # stats.Difference | stats.VarianceRatio | None
    p_holm: float | None = None
    seeds_needed: int | None = None
    statistic: str = ""
    reason: str = ""
    cost: dict[str, Any] = field(default_factory=dict)

    @property
    def p(self) -> float | None:
        return None if self.test is None else float(self.test.p)

    @property
    def scale(self) -> str:
        """``digits, 8 epochs, n = 4``: what a verdict is about (empty without runs)."""
        ev = self.evidence
        if ev is None or not ev.scale:
            return ""
        na, nb = ev.n
        return f"{ev.scale}, n = {na if na == nb else f'{na} + {nb}'}"

    def verdict_text(self) -> str:
        if self.verdict in (Verdict.SUPPORTED, Verdict.CONTRADICTED):
            return f"**{self.verdict}** ({self.scale})" if self.scale else f"**{self.verdict}**"
        if self.verdict is Verdict.NOT_TESTED:
            return "not tested: the numbers are stated (DeiT-S, 224x224)"
        return f"{self.verdict}: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        ev = self.evidence
        return {
            "id": self.claim.id, "claim": self.claim.text, "verdict": str(self.verdict),
            "scale": self.scale or None,
            "statistic": self.statistic, "p": self.p, "p_holm": self.p_holm,
            "seeds_needed": self.seeds_needed, "reason": self.reason or None,
            "evidence": None if ev is None else {
                "grid": ev.grid, "preset": ev.preset, "a": ev.a_name, "b": ev.b_name,
                "values_a": ev.values_a, "values_b": ev.values_b, "seeds_a": ev.seeds_a,
                "seeds_b": ev.seeds_b, "runs_a": ev.runs_a, "runs_b": ev.runs_b,
                "diverged": list(ev.diverged), "best_a": ev.best_a, "best_b": ev.best_b,
                "untrained_a": ev.untrained_a or None, "untrained_b": ev.untrained_b or None,
                "others": ev.others, "notes": ev.notes},
            **({"cost": self.cost} if self.cost else {}),
        }


def p_text(p: float | None) -> str:
    """``= 0.034`` or ``< 0.001``."""
    from reproduce.report.stats import fmt_p

    text = fmt_p(p)
    return text.replace("<", "< ") if text.startswith("<") else f"= {text}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def statistic_text(claim: Claim, ev: Evidence, test: Any) -> str:
    """The claim's numbers in one cell. An F test at a handful of seeds per arm has almost no
    power (0.10 at a true ratio of 0.25 with 3 + 3 seeds), so the seed variance is described
    first and its p given as a descriptive figure. A paired-edf claim gives the two arms' error
    distributions over the draws (medians, EDF at the pooled median) and the signed-rank test."""
    if claim.statistic == "paired-edf":
        near_a, near_b = (near_best(v) for v in (ev.values_a, ev.values_b))
        return (f"top-1 error over {test.n} paired (lr, wd) draws: median {test.median_a:.1f} vs "
                f"{test.median_b:.1f}, mean Δ {test.diff:+.1f} [{test.low:.1f}, "
                f"{test.high:.1f}]; draws with error <= {test.threshold:.1f} (the pooled "
                f"median): {test.under_a:.0%} vs {test.under_b:.0%}; {test.describe()}, "
                f"p {p_text(test.p)}; dispersion (not tested): draws within "
                f"{EDF_MARGIN:g} points of the stem's own best error {near_a:.0%} vs "
                f"{near_b:.0%}")
    if claim.statistic == "seed-variance":
        ratio = "inf" if math.isinf(test.ratio) else f"{test.ratio:.2g}"
        ci = "" if math.isinf(test.ratio) else f" [{test.low:.2g}, {test.high:.2g}]"
        return (f"sd {test.sd_a:.1f} vs {test.sd_b:.1f}, variance ratio {ratio}{ci} "
                f"(descriptive at n = {test.n_a} + {test.n_b}); F({test.n_a - 1}, "
                f"{test.n_b - 1}) test p {p_text(test.p)}")
    unit = {"difference": f"{claim.metric.replace('best_top1', 'best-epoch top-1')}"
                          .replace("top1", "final-epoch top-1"),
            "spread": (f"spread of logit top-1 over {claim.axis} (max - min)"
                       if claim.link == "logit" else
                       f"spread of top-1 over {claim.axis} (max - min)"),
            "diversity": "effective rank"}[claim.statistic]
    digits = 2 if claim.link == "logit" else 1
    text = (f"{unit}: {test.mean_a:.{digits}f} vs {test.mean_b:.{digits}f}, Δ "
            f"{test.diff:+.{digits}f} [{test.low:.{digits}f}, {test.high:.{digits}f}]; "
            f"{test.describe()}, p {p_text(test.p)}")
    if ev.untrained_a and ev.untrained_b:
        text += (f"; untrained (same seeds and images) {_mean(ev.untrained_a):.1f} vs "
                 f"{_mean(ev.untrained_b):.1f}")
    if ev.best_a and ev.best_b:
        text += (f"; best-epoch top-1 {_mean(ev.best_a):.1f} vs {_mean(ev.best_b):.1f} "
                 f"(Δ {_mean(ev.best_a) - _mean(ev.best_b):+.1f}, not tested)")
    return text


def near_best(errors: list[float], margin: float = EDF_MARGIN) -> float:
    """The share of draws whose top-1 error is within ``margin`` points of the arm's best."""
    if not errors:
        return 0.0
    best = min(errors)
    return sum(e <= best + margin for e in errors) / len(errors)


def untrained_setting(claim: Claim, ev: Evidence) -> str:
    """Why a spread claim is not testable on this evidence (empty: it is): an arm's setting whose
    mean top-1 keeps less than ``claim.min_trained`` of the arm's best setting's above-chance
    top-1 did not train, and a spread over it measures a broken run, not sensitivity."""
    if claim.min_trained is None or claim.statistic != "spread":
        return ""
    broken = []
    for name, means in ((ev.a_name, ev.settings_a), (ev.b_name, ev.settings_b)):
        if not means:
            continue
        best = max(means.values())
        for setting, mean in means.items():
            kept = (mean - ev.chance) / (best - ev.chance) if best > ev.chance else 0.0
            if kept < claim.min_trained:
                broken.append(f"{name} at {setting}: {mean:.1f} top-1 keeps {kept:.0%} of its "
                              f"best's {best - ev.chance:.1f} points above chance")
    if not broken:
        return ""
    return (f"a setting did not train ({'; '.join(broken)}; < {claim.min_trained:.0%}): the "
            f"spread would measure a broken run, not sensitivity")


def run_test(claim: Claim, ev: Evidence) -> Any:
    """Welch's test (F test for seed variance), each arm's variance floored at the metric's
    resolution (the effective rank has no grid: no floor); Wilcoxon's signed-rank test on the
    per-draw differences for a paired-edf claim."""
    from reproduce.report import stats

    if claim.statistic == "paired-edf":
        return stats.paired_draws(ev.values_a, ev.values_b)
    resolution = 0.0 if claim.statistic == "diversity" else ev.resolution
    if claim.statistic == "seed-variance":
        return stats.variance_ratio(ev.values_a, ev.values_b, resolution=resolution)
    return stats.welch(ev.values_a, ev.values_b, resolution=resolution)


def no_test_reason(ev: Evidence, statistic: str = "") -> str:
    """Why two arms of n >= 2 gave no test: every paired draw tied, or which arm(s) did not vary
    (only possible with no resolution to floor their variance at)."""
    if statistic == "paired-edf":
        return "the two arms' errors are equal on every draw: the signed-rank test is undefined"
    flat = [name for name, v in ((ev.a_name, ev.values_a), (ev.b_name, ev.values_b))
            if len(set(v)) == 1]
    if len(flat) == 2:
        return "neither arm varies across seeds and the metric has no resolution: no test"
    return (f"{flat[0] if flat else 'one arm'} does not vary across seeds and the metric has no "
            f"resolution: no test")


def _claimed_direction(claim: Claim, test: Any) -> int:
    """+1 when the observed effect points the way the claim says, -1 the other way, 0 none."""
    if claim.statistic == "seed-variance":
        effect = 0.0 if test.ratio == 1 else (1.0 if test.ratio > 1 else -1.0)
    else:
        effect = float(math.copysign(1.0, test.diff)) if test.diff != 0 else 0.0
    want = 1.0 if claim.expect == "greater" else -1.0
    return int(effect * want)


def decide(results: list[Result], cs: ClaimSet, untested: int = 0) -> int:
    """Holm-adjust the p-values of every tested result together and give each its verdict;
    ``untested``: family members whose p is unknown (a skipped measurement), counted at p = 1 so
    the others' adjusted p-values are never smaller than the full family's. Returns the family
    size."""
    from reproduce.report import stats

    tested = [r for r in results if r.test is not None]
    adjusted = stats.holm([r.p for r in tested] + [1.0] * untested)
    for r, p in zip(tested, adjusted, strict=False):
        r.p_holm = p
    family = len(tested) + untested
    m = max(1, family)
    for r in tested:
        direction = _claimed_direction(r.claim, r.test)
        # Holm p right after p, before what is descriptive (untrained values, best epoch)
        cut = min((i for i in (r.statistic.find("; untrained"), r.statistic.find("; best-epoch"))
                   if i >= 0), default=len(r.statistic))
        head, sep, best = r.statistic[:cut], "", r.statistic[cut:]
        r.statistic = f"{head}, Holm p {p_text(r.p_holm)}{sep}{best}"
        if r.p_holm is not None and r.p_holm < cs.alpha and direction != 0:
            r.verdict = Verdict.SUPPORTED if direction > 0 else Verdict.CONTRADICTED
            continue
        r.verdict = Verdict.INCONCLUSIVE
        level = cs.alpha / m
        ev = r.evidence
        n_text = f"n = {ev.n[0]} + {ev.n[1]}" if ev else "these seeds"
        if r.claim.statistic == "paired-edf":
            _draws_reason(r, cs, m, n_text)
            continue
        if r.claim.statistic == "seed-variance":
            need = stats.variance_seeds_needed(r.test.ratio, level, cs.power)
            effect = f"a variance ratio of {r.test.ratio:.2g}"
        else:
            resolution = 0.0 if r.claim.statistic == "diversity" or ev is None else ev.resolution
            need = stats.seeds_needed(r.test.diff, r.test.sd_a, r.test.sd_b, level, cs.power,
                                      resolution=resolution)
            effect = f"a difference of {r.test.diff:+.1f}"
        r.seeds_needed = need
        where = f"power {cs.power:g} at α = {cs.alpha:g}/{m}, at the observed effect and spread"
        if need is None:
            r.reason = (f"{effect} is too small to resolve with {n_text}: more than "
                        f"{stats.MAX_SEEDS} seeds per arm would be needed ({where})")
        else:
            r.reason = f"about {need} seeds per arm would decide it ({where})"
    return family


def _draws_reason(r: Result, cs: ClaimSet, m: int, n_text: str) -> None:
    """An undecided paired-edf claim: the paired draws that would decide it (a stated normal
    approximation, :func:`~reproduce.report.stats.draws_needed`) and the command that adds
    them."""
    from reproduce.report import stats

    need = stats.draws_needed(r.test.diff, r.test.sd_diff, cs.alpha / m, cs.power)
    r.seeds_needed = need
    where = f"power {cs.power:g} at α = {cs.alpha:g}/{m}, normal approximation"
    preset = r.evidence.preset if r.evidence else "quick"
    r.reason = (f"about {need} paired draws would decide it ({where}; srv ablate "
                f"{r.claim.grid} --preset {preset} --samples {need})" if need else
                f"a mean difference of {r.test.diff:+.1f} is too small to resolve with "
                f"{n_text}: more than 1000 draws would be needed ({where})")


@functools.lru_cache(maxsize=16)
def _count(model: str) -> Any:
    """fvcore's count of a catalogue model (an architecture property: counted once a process)."""
    from reproduce.models.flops import count

    return count(model)


def cost_result(claim: Claim) -> Result:
    """The cost claim: extra params and GFLOPs, stated (no seeds, no test, no verdict); the
    claim's bound (our reading of "few") is shown beside them."""
    with_m, without_m = claim.models or ("", "")
    a, b = _count(with_m), _count(without_m)
    extra_p, extra_f = a.params_m / b.params_m - 1, a.gflops / b.gflops - 1
    bound = claim.max_extra or 0.0
    ev = Evidence(claim.grid, "catalogue", with_m, without_m, [], [], [], [],
                  notes=["fvcore count of the architecture; no seeds involved"])
    text = (f"{extra_p:+.1%} params ({a.params_m:.2f} vs {b.params_m:.2f} M), {extra_f:+.1%} "
            f"GFLOPs ({a.gflops:.2f} vs {b.gflops:.2f}); our reading of \"few\" would be "
            f"+{bound:.0%}; {_assumption(with_m)}")
    cost: dict[str, Any] = {"params_m": [a.params_m, b.params_m], "gflops": [a.gflops, b.gflops],
                            "extra_params": extra_p, "extra_gflops": extra_f, "max_extra": bound}
    if claim.also:
        from reproduce.models.flops import count

        alt = count(with_m, **claim.also)
        alt_p, alt_f = alt.params_m / b.params_m - 1, alt.gflops / b.gflops - 1
        args = ", ".join(f"{k} {v}" for k, v in claim.also.items())
        text += f"; at {args}: {alt_p:+.1%} params, {alt_f:+.1%} GFLOPs"
        cost["also"] = {**claim.also, "extra_params": alt_p, "extra_gflops": alt_f}
    return Result(claim, ev, Verdict.NOT_TESTED, statistic=text, cost=cost)


def _assumption(model: str) -> str:
    """What the count assumes of ``model``'s stem: its layout and hidden width."""
    from reproduce.models import STEM_KINDS, get_entry

    entry = get_entry(model)
    if entry.stem not in STEM_KINDS:
        return f"{model}'s stem as the catalogue builds it"
    spec = entry.stem_spec()
    return (f"assumes {model}'s stem {spec} (hidden width {entry.stem_width}, the authors' "
            f"layout: docs/paper.md §1)")

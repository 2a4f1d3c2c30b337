"""scripts/design_power.py: the power table of the pre-registered design (docs/claims.md), from
the committed calibration; its vectorised tests agree with srv claims' own statistics."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from reproduce.report import stats

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "design_power.py"


@pytest.fixture(scope="module")
def dp():  # noqa: ANN201 - the script as a module
    spec = importlib.util.spec_from_file_location("design_power", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vectorised_tests_match_srv_claims_statistics(dp) -> None:  # noqa: ANN001
    rng = np.random.default_rng(1)
    a, b = rng.normal(90, 2, (5, 4)), rng.normal(85, 4, (5, 4))
    a[0] = 93.0  # an arm that does not vary: floored at the resolution
    floor = dp.RESOLUTION**2 / 12
    p, diff = dp._welch(a, b, floor)
    f = dp._f_test(a, b, floor)
    for i in range(5):
        ref = stats.welch(a[i], b[i], resolution=dp.RESOLUTION)
        assert p[i] == pytest.approx(ref.p) and diff[i] == pytest.approx(ref.diff)
        assert f[i] == pytest.approx(stats.variance_ratio(a[i], b[i],
                                                         resolution=dp.RESOLUTION).p)
    family = rng.uniform(0, 0.1, (6, 5))
    for row, adjusted in zip(family, dp._holm(family), strict=True):
        assert list(adjusted) == pytest.approx(stats.holm(list(row)))


def test_four_seeds_is_the_smallest_n_with_power_for_every_main_claim(dp) -> None:  # noqa: ANN001
    top1 = dp.calibration()
    assert {k: len(v) for k, v in top1.items()} == {
        "patch": 10, "conv": 10, "conv-norelu": 10, "conv-nobn": 10, "conv-linear": 10}
    three, four = dp.power(3, draws=4000), dp.power(4, draws=4000)
    assert min(four.values()) >= 0.85  # relu 0.91 at 20,000 draws
    assert three["relu"] < 0.7  # 0.54: n = 3 is not enough

"""store.stats against scipy, table by table."""

from __future__ import annotations

import math

import pytest
from scipy import special
from scipy import stats as sp

from store import stats

BETA_CASES = [
    (0.5, 0.5, 0.3),
    (2.0, 3.0, 0.4),
    (10.0, 0.5, 0.95),
    (0.5, 10.0, 0.01),
    (50.0, 50.0, 0.5),
    (1000.0, 0.5, 0.999),
    (3.3, 7.7, 0.9),
]
T_CASES = [(-3.0, 1.0), (0.0, 5.0), (1.5, 2.5), (2.1, 10.0), (-0.7, 37.4), (4.0, 300.0), (1.0, 1e4)]
# Welch degrees of freedom reach millions with millions of calls: looser, still far below any
# decision threshold.
HUGE_DF_CASES = [(0.5, 1e6), (1.0, 9.9e6), (2.0, 1e8), (-2.5, 1e12)]


@pytest.mark.parametrize(("a", "b", "x"), BETA_CASES)
def test_regularized_incomplete_beta(a: float, b: float, x: float) -> None:
    assert stats.regularized_incomplete_beta(a, b, x) == pytest.approx(
        special.betainc(a, b, x), rel=1e-10, abs=1e-14
    )


@pytest.mark.parametrize(("t", "df"), T_CASES)
def test_student_t_cdf(t: float, df: float) -> None:
    assert stats.student_t_cdf(t, df) == pytest.approx(sp.t.cdf(t, df), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(("t", "df"), HUGE_DF_CASES)
def test_student_t_cdf_with_huge_degrees_of_freedom(t: float, df: float) -> None:
    assert stats.student_t_cdf(t, df) == pytest.approx(sp.t.cdf(t, df), abs=1e-8)


@pytest.mark.parametrize(("p", "df"), [(0.975, 1.0), (0.975, 29.0), (0.6, 3.5), (0.01, 12.0)])
def test_student_t_quantile(p: float, df: float) -> None:
    assert stats.student_t_quantile(p, df) == pytest.approx(sp.t.ppf(p, df), rel=1e-9)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (7, 30), (450, 1000), (1, 3), (29, 31)])
def test_wilson_interval(k: int, n: int) -> None:
    expected = sp.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert stats.wilson_interval(k, n) == pytest.approx((expected.low, expected.high), rel=1e-12)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"),
    [(20, 40, 45, 60), (300, 1000, 330, 1000), (1, 31, 9, 30), (5, 9, 5, 9)],
)
def test_two_proportion_p_value(x1: int, n1: int, x2: int, n2: int) -> None:
    # The pooled two-proportion z-test is the 2x2 chi-square test without continuity correction.
    table = [[x1, n1 - x1], [x2, n2 - x2]]
    expected = sp.chi2_contingency(table, correction=False).pvalue
    assert stats.two_proportion_p_value(x1, n1, x2, n2) == pytest.approx(expected, rel=1e-9)


def test_two_proportion_degenerate_cases() -> None:
    assert stats.two_proportion_p_value(0, 0, 1, 2) is None
    assert stats.two_proportion_p_value(5, 5, 9, 9) == 1.0


@pytest.mark.parametrize(
    ("m1", "v1", "n1", "m2", "v2", "n2"),
    [
        (120.0, 900.0, 40, 100.0, 400.0, 60),
        (3.0, 1.0, 2, 5.0, 30.0, 3),
        (61.2, 0.5, 500, 61.3, 50.0, 31),
        (10.0, 4.0, 30, 10.0, 4.0, 30),
    ],
)
def test_welch_p_value(m1: float, v1: float, n1: int, m2: float, v2: float, n2: int) -> None:
    expected = sp.ttest_ind_from_stats(
        m1, math.sqrt(v1), n1, m2, math.sqrt(v2), n2, equal_var=False
    ).pvalue
    assert stats.welch_p_value(m1, v1, n1, m2, v2, n2) == pytest.approx(expected, rel=1e-9)


def test_welch_degenerate_cases() -> None:
    assert stats.welch_p_value(1.0, 1.0, 1, 2.0, 1.0, 5) is None
    assert stats.welch_p_value(3.0, 0.0, 5, 3.0, 0.0, 5) == 1.0
    assert stats.welch_p_value(3.0, 0.0, 5, 4.0, 0.0, 5) == 0.0


@pytest.mark.parametrize(
    ("mean", "var", "n"), [(100.0, 400.0, 30), (5.0, 2.0, 2), (60.0, 1e4, 1000)]
)
def test_mean_interval(mean: float, var: float, n: int) -> None:
    expected = sp.t.interval(0.95, n - 1, loc=mean, scale=math.sqrt(var / n))
    assert stats.mean_interval(mean, var, n) == pytest.approx(expected, rel=1e-9)
    assert stats.mean_interval(mean, var, 1) is None

"""store.stats against scipy: Wilson intervals by scipy's, the mixture SPRT's closed forms by
numerical integration (tests/sequential_reference.py). Its error rates under repeated looks are
simulated in tests/test_sequential.py."""

from __future__ import annotations

import math
import statistics

import pytest
from scipy import stats as sp

from store import stats
from tests.sequential_reference import mixture_p_value

WILSON_CASES = [(0, 10), (10, 10), (7, 30), (450, 1000), (1, 3), (29, 31), (0, 1), (1, 1)]
# scipy takes a confidence level, whose last digits are lost when it is within 1e-12 of 1: the
# sequential z beyond 7 below about 10 calls.
LARGE_WILSON_CASES = [(k, n) for k, n in WILSON_CASES if n >= 10]


@pytest.mark.parametrize(("k", "n"), WILSON_CASES)
def test_wilson_interval(k: int, n: int) -> None:
    expected = sp.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert stats.wilson_interval(k, n) == pytest.approx((expected.low, expected.high), rel=1e-12)


@pytest.mark.parametrize(("k", "n"), LARGE_WILSON_CASES)
def test_sequential_proportion_interval_is_wilson_at_the_sequential_z(k: int, n: int) -> None:
    z = stats.sequential_z(n)
    confidence = 1.0 - 2.0 * sp.norm.sf(z)
    expected = sp.binomtest(k, n).proportion_ci(confidence, method="wilson")
    interval = stats.sequential_proportion_interval(k, n)
    assert interval == pytest.approx((expected.low, expected.high), rel=1e-9, abs=1e-15)
    # Wider than the fixed-sample interval: it holds at every look, not only at one.
    wilson = stats.wilson_interval(k, n)
    assert interval is not None and wilson is not None
    assert interval[0] <= wilson[0] and interval[1] >= wilson[1]


def test_intervals_contain_their_estimate_exactly() -> None:
    """At 0% and 100% as anywhere else: the observed rate is never outside its interval, not
    even by a rounding error."""
    for n in range(1, 3001):
        for k in {0, 1, n // 3, n - 1, n}:
            p = k / n
            for interval in (
                stats.wilson_interval(k, n),
                stats.sequential_proportion_interval(k, n),
            ):
                assert interval is not None
                low, high = interval
                assert 0.0 <= low <= p <= high <= 1.0, (k, n, interval)
    for mean, var, n in [(0.0, 0.0, 2), (1e9, 1e-9, 5), (-3.5, 2.0, 30), (120.0, 1e4, 10**6)]:
        found = stats.sequential_mean_interval(stats.Moments(n, mean, var))
        assert found is not None and found[0] <= mean <= found[1]
    assert stats.wilson_interval(0, 0) is None
    assert stats.sequential_proportion_interval(0, 0) is None
    assert stats.sequential_mean_interval(stats.Moments(1, 5.0, 0.0)) is None


@pytest.mark.parametrize(
    ("z", "n_eff"), [(0.0, 30.0), (1.0, 15.0), (2.5, 100.0), (-3.2, 500.0), (4.0, 2500.0)]
)
def test_sequential_p_value_is_the_mixture_likelihood_ratio(z: float, n_eff: float) -> None:
    var = 0.25 / n_eff
    expected = mixture_p_value(z * math.sqrt(var), var, n_eff)
    assert stats.sequential_p_value(z, n_eff) == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("n_eff", [15.0, 30.0, 250.0, 1e4])
@pytest.mark.parametrize("alpha", [0.05, 0.025, 0.01])
def test_sequential_z_is_where_the_p_value_reaches_alpha(n_eff: float, alpha: float) -> None:
    z = stats.sequential_z(n_eff, alpha)
    assert stats.sequential_p_value(z, n_eff) == pytest.approx(alpha, rel=1e-12)
    # Stricter than the fixed-sample test (1.96 at 5%): the price of looking at every call.
    assert z > sp.norm.isf(alpha / 2)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2"),
    [(20, 40, 45, 60), (300, 1000, 330, 1000), (1, 31, 9, 30), (5, 9, 5, 9), (0, 50, 4, 50)],
)
def test_two_proportions_test(x1: int, n1: int, x2: int, n2: int) -> None:
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    expected = mixture_p_value(x1 / n1 - x2 / n2, var, 1 / (1 / n1 + 1 / n2))
    assert stats.two_proportions_test(x1, n1, x2, n2) == pytest.approx(expected, rel=1e-8)


def test_two_proportions_degenerate_cases() -> None:
    assert stats.two_proportions_test(0, 0, 1, 2) is None
    assert stats.two_proportions_test(5, 5, 9, 9) == 1.0
    assert stats.two_proportions_test(0, 5, 0, 9) == 1.0


@pytest.mark.parametrize(
    ("m1", "v1", "n1", "m2", "v2", "n2"),
    [
        (120.0, 900.0, 40, 100.0, 400.0, 60),
        (3.0, 1.0, 2, 5.0, 30.0, 3),
        (61.2, 0.5, 500, 61.3, 50.0, 31),
        (10.0, 4.0, 30, 10.0, 4.0, 30),
    ],
)
def test_two_means_test(m1: float, v1: float, n1: int, m2: float, v2: float, n2: int) -> None:
    expected = mixture_p_value(m1 - m2, v1 / n1 + v2 / n2, 1 / (1 / n1 + 1 / n2))
    found = stats.two_means_test(stats.Moments(n1, m1, v1), stats.Moments(n2, m2, v2))
    assert found == pytest.approx(expected, rel=1e-8)


def test_two_means_degenerate_cases() -> None:
    one, five = stats.Moments(1, 1.0, 0.0), stats.Moments(5, 2.0, 1.0)
    assert stats.two_means_test(one, five) is None
    flat = stats.Moments(5, 3.0, 0.0)
    assert stats.two_means_test(flat, flat) == 1.0
    assert stats.two_means_test(flat, stats.Moments(5, 4.0, 0.0)) == 0.0


def test_moments_from_sums() -> None:
    values = [12.5, 300.0, 47.25, 61.0, 5.0]
    found = stats.Moments.from_sums(len(values), sum(values), sum(v * v for v in values))
    assert found is not None
    assert found.n == 5
    assert found.mean == pytest.approx(statistics.fmean(values), rel=1e-15)
    assert found.var == pytest.approx(statistics.variance(values), rel=1e-12)
    # Equal large values: sum(x^2) - n mean^2 rounds below zero; the variance is 0, not negative.
    same = [1234567.89] * 3
    flat = stats.Moments.from_sums(3, sum(same), sum(v * v for v in same))
    assert flat is not None and flat.var == 0.0
    assert stats.Moments.from_sums(1, 7.0, 49.0) == stats.Moments(1, 7.0, 0.0)
    assert stats.Moments.from_sums(0, 0.0, 0.0) is None

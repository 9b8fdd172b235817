"""Pure statistics for call analytics: Wilson intervals, two-proportion z-test, Welch's t-test.

Standard library only (no scipy at runtime): the Student t distribution comes from the
regularized incomplete beta function, evaluated by its continued fraction (Numerical Recipes,
`betacf`, modified Lentz). The tests check every function against scipy.
"""

from __future__ import annotations

import math
from statistics import NormalDist

# Two-sided 95%: the normal quantile 0.975 (1.959963984540054).
CONFIDENCE = 0.95
Z_95 = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)

# Buckets (seconds) for a call-duration histogram: voice calls run from a few seconds (hang-ups,
# wrong numbers) to an hour (long support sessions); finer where most calls end, 30 s to 5 min.
CALL_DURATION_BUCKETS_S = (5.0, 15.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0, 3600.0)

# The continued fraction converges in O(sqrt(max(a, b))) steps; 300 covers a, b up to ~10^4
# (Welch degrees of freedom / 2 beyond that make the t distribution indistinguishable from the
# normal, which the caller handles). EPS is near double precision; FPMIN avoids division by 0.
_BETACF_MAX_ITERATIONS = 300
_BETACF_EPS = 3.0e-16
_BETACF_FPMIN = 1.0e-300
# Beyond this many degrees of freedom Student's t is the normal to within ~1e-8, closer than the
# continued fraction gets there (lgamma of huge arguments loses digits).
_NORMAL_DF = 1.0e7
# Bisection steps for the t quantile: 200 halvings exhaust double precision for any bracket.
_QUANTILE_STEPS = 200


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) >= _BETACF_FPMIN else _BETACF_FPMIN)
    h = d
    for m in range(1, _BETACF_MAX_ITERATIONS + 1):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) >= _BETACF_FPMIN else _BETACF_FPMIN)
            c = 1.0 + aa / c
            c = c if abs(c) >= _BETACF_FPMIN else _BETACF_FPMIN
            delta = d * c
            h *= delta
        if abs(delta - 1.0) < _BETACF_EPS:
            break
    return h


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0 and 0.0 <= x <= 1.0):
        raise ValueError("need a > 0, b > 0 and 0 <= x <= 1")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The fraction converges fast only on this side of the mean; use the symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (> 0, not necessarily whole) degrees of freedom."""
    if df > _NORMAL_DF:
        return NormalDist().cdf(t)
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p, by bisection on `student_t_cdf` (0 < p < 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError("need 0 < p < 1")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, high * 2.0
    for _ in range(_QUANTILE_STEPS):
        mid = (low + high) / 2.0
        if student_t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion (no continuity correction); None when n is 0."""
    if n <= 0:
        return None
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_p_value(x1: int, n1: int, x2: int, n2: int) -> float | None:
    """Two-sided p-value of the pooled two-proportion z-test; None when a side is empty.

    When both sides are all successes or all failures there is no variation to test: 1.0.
    """
    if n1 <= 0 or n2 <= 0:
        return None
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    if se == 0.0:
        return 1.0
    z = (x1 / n1 - x2 / n2) / se
    return math.erfc(abs(z) / math.sqrt(2.0))


def welch_p_value(
    mean1: float, var1: float, n1: int, mean2: float, var2: float, n2: int
) -> float | None:
    """Two-sided p-value of Welch's unequal-variances t-test from summary statistics.

    `var` is the sample variance (n - 1 denominator). None when a side has fewer than two
    observations; with no variance on either side the means either match (1.0) or differ (0.0).
    """
    if n1 < 2 or n2 < 2:
        return None
    s1, s2 = var1 / n1, var2 / n2
    se2 = s1 + s2
    if se2 == 0.0:
        return 1.0 if mean1 == mean2 else 0.0
    t = (mean1 - mean2) / math.sqrt(se2)
    df = se2 * se2 / (s1 * s1 / (n1 - 1) + s2 * s2 / (n2 - 1))
    return 2.0 * student_t_cdf(-abs(t), df)


def mean_interval(mean: float, var: float, n: int) -> tuple[float, float] | None:
    """Student t confidence interval (95%) for a mean; None below two observations."""
    if n < 2:
        return None
    half = student_t_quantile(0.5 + CONFIDENCE / 2, n - 1) * math.sqrt(var / n)
    return mean - half, mean + half

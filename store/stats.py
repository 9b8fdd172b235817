"""Pure statistics for call analytics: Wilson intervals, and the mixture sequential probability
ratio test (mSPRT) behind verdicts and guardrail trips (docs/design.md, section 10).

Standard library only. Every function takes sufficient statistics (n and successes; n, mean and
sample variance, or n, sum and sum of squares through `Moments.from_sums`), so the same code
serves a scan of the calls and merged aggregates. The tests check the closed forms against
numerical integration with scipy, and the error rate under daily looks by simulation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

# Two-sided 95%: the normal quantile 0.975 (1.959963984540054).
CONFIDENCE = 0.95
ALPHA = 1.0 - CONFIDENCE
Z_95 = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)

# Buckets (seconds) for a call-duration histogram: voice calls run from a few seconds (hang-ups,
# wrong numbers) to an hour (long support sessions); finer where most calls end, 30 s to 5 min.
CALL_DURATION_BUCKETS_S = (5.0, 15.0, 30.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0, 1800.0, 3600.0)

# The sequential test, as responses name it.
SequentialMethod = Literal["msprt"]
SEQUENTIAL_METHOD: SequentialMethod = "msprt"
# Standard deviation of the normal mixture over effects, in units of one observation's standard
# deviation: 0.2, a "small" standardised effect, which is a 10-point difference of a rate near
# 50%. The mixture spends its power on effects near this size: among 0.1, 0.15, 0.2, 0.25 and
# 0.3, 0.2 to 0.3 reached a verdict on a 50% -> 60% difference soonest (median ~850 calls) and
# 0.1 latest (~1,040); smaller values wait longer for small effects, larger ones for large.
MIXTURE_EFFECT_SIZE = 0.2


@dataclass(frozen=True)
class Moments:
    """n observations summarised by their mean and sample variance (n - 1 denominator)."""

    n: int
    mean: float
    var: float

    @classmethod
    def from_sums(cls, n: int, total: float, total_sq: float) -> Moments | None:
        """From a count, a sum and a sum of squares (mergeable aggregates); None when n is 0."""
        if n <= 0:
            return None
        mean = total / n
        # sum(x^2) - n mean^2 loses digits when the spread is small against the mean, and may
        # round below zero: no variance is then the honest answer.
        var = max(0.0, (total_sq - total * mean) / (n - 1)) if n > 1 else 0.0
        return cls(n, mean, var)


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval for a proportion (no continuity correction); None when n is 0.

    The interval contains the observed proportion exactly: at 0 or n successes the formula's
    bound equals it only up to rounding, which could leave 0% just outside [1e-17, ...].
    """
    if n <= 0:
        return None
    p = successes / n
    z2 = z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denominator
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def _mixture_ratio(n_eff: float) -> float:
    """V / tau^2: the estimate's variance over the mixture's, after n_eff observations."""
    return 1.0 / (n_eff * MIXTURE_EFFECT_SIZE**2)


def sequential_z(n_eff: float, alpha: float = ALPHA) -> float:
    """The |z| at which the mSPRT rejects "no effect" at level `alpha` after `n_eff` effective
    observations (n for one sample, 1 / (1/n1 + 1/n2) for two).

    With a normal mixture N(0, tau^2) over the effect, the likelihood ratio of an estimate with
    variance V and z-score z is sqrt(V / (V + tau^2)) exp(z^2 tau^2 / (2 (V + tau^2))): a
    martingale under "no effect", so by Ville's inequality it ever reaches 1/alpha with
    probability at most alpha, however often it is looked at. Solved for z.
    """
    r = _mixture_ratio(n_eff)
    return math.sqrt((1.0 + r) * (2.0 * math.log(1.0 / alpha) + math.log1p(1.0 / r)))


def sequential_p_value(z: float, n_eff: float) -> float:
    """The always-valid p-value at this look: 1 / likelihood ratio, at most 1.

    It is at most alpha exactly when |z| >= sequential_z(n_eff, alpha). (Always-valid
    inference also takes the running minimum over looks; without the history, each look's own
    value is still a valid p-value at whatever time one stops.)
    """
    r = _mixture_ratio(n_eff)
    log_ratio = 0.5 * math.log(r / (1.0 + r)) + z * z / (2.0 * (1.0 + r))
    return math.exp(-log_ratio) if log_ratio > 0.0 else 1.0


def two_proportions_test(x1: int, n1: int, x2: int, n2: int) -> float | None:
    """Always-valid two-sided p-value of "the two proportions are equal" (mSPRT, with the
    pooled variance the hypothesis implies); None when a side is empty.

    When both sides are all successes or all failures there is no variation to test: 1.0.
    """
    if n1 <= 0 or n2 <= 0:
        return None
    n_eff = 1.0 / (1.0 / n1 + 1.0 / n2)
    pooled = (x1 + x2) / (n1 + n2)
    var = pooled * (1.0 - pooled) / n_eff
    if var == 0.0:
        return 1.0
    return sequential_p_value((x1 / n1 - x2 / n2) / math.sqrt(var), n_eff)


def two_means_test(a: Moments, b: Moments) -> float | None:
    """Always-valid two-sided p-value of "the two means are equal" (mSPRT, each side with its
    own variance, as Welch's test). None below two observations on a side; with no variance on
    either side the means either match (1.0) or differ (0.0).
    """
    if a.n < 2 or b.n < 2:
        return None
    var = a.var / a.n + b.var / b.n
    if var == 0.0:
        return 1.0 if a.mean == b.mean else 0.0
    n_eff = 1.0 / (1.0 / a.n + 1.0 / b.n)
    return sequential_p_value((a.mean - b.mean) / math.sqrt(var), n_eff)


def sequential_proportion_interval(successes: int, n: int) -> tuple[float, float] | None:
    """Always-valid 95% interval for a proportion: the proportions the mSPRT, with the variance
    each of them implies, does not reject. That is a Wilson interval at sequential_z(n)."""
    return wilson_interval(successes, n, sequential_z(n)) if n > 0 else None


def sequential_mean_interval(m: Moments) -> tuple[float, float] | None:
    """Always-valid 95% interval for a mean (mSPRT); None below two observations."""
    if m.n < 2:
        return None
    half = sequential_z(m.n) * math.sqrt(m.var / m.n)
    return m.mean - half, m.mean + half

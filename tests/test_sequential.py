"""Verdicts and guardrail trips looked at after every call: simulated, thousands of runs at once.

An A/A comparison (two arms with the same automation rate and durations) is checked after each
call, as the console and the guardrails do; the share of runs that EVER declare a difference
must stay at or below 5%, with room to spare: the upper end of its 99% interval. The decision
rule is the store's: the simulation vectorises the z-scores across runs with numpy and compares
them with `stats.sequential_z`, then `analytics.compare` (or `guardrails.breach`) is asked about
every run at the look where the simulation says it first crossed, the look before, and the last
look, and must agree. Run with `-s` to see the figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from store import analytics, guardrails, stats

SEED = 15
RUNS = 2000
# Calls per A/A run, each one followed by a look: about a month of a 50/50 test at 130 calls a
# day, and the error rate of a sequential test only grows with the number of looks.
AA_CALLS = 4000
# The 10-point difference runs until nearly every run has a verdict.
POWER_CALLS = 8000
BASE_RATE = 0.5
# Call durations: log-normal, median 120 s, skewed like real calls (mean ~165 s, long tail).
DURATION_MEDIAN_S = 120.0
DURATION_SIGMA = 0.8
DURATION_MEAN_S = DURATION_MEDIAN_S * math.exp(DURATION_SIGMA**2 / 2)
# The margin: the upper end of a 99% interval on the observed share must be within 5%.
Z_99 = 2.5758293035489004
NOMINAL = 0.05
# The verdict's per-metric level (Bonferroni over its two metrics).
VERDICT_ALPHA = analytics.SIGNIFICANCE / analytics.VERDICT_METRICS


@dataclass
class Arm:
    """Running sums of one arm, one entry per run."""

    n: int
    automated: np.ndarray
    total_s: np.ndarray
    total_sq: np.ndarray

    @classmethod
    def empty(cls) -> Arm:
        return cls(0, np.zeros(RUNS), np.zeros(RUNS), np.zeros(RUNS))

    def add(self, rng: np.random.Generator, rate: float) -> None:
        durations = rng.lognormal(math.log(DURATION_MEDIAN_S), DURATION_SIGMA, RUNS)
        self.n += 1
        self.automated += rng.random(RUNS) < rate
        self.total_s += durations
        self.total_sq += durations * durations

    def copy(self) -> Arm:
        return Arm(self.n, self.automated.copy(), self.total_s.copy(), self.total_sq.copy())

    def var(self) -> np.ndarray:
        mean = self.total_s / self.n
        return np.maximum(0.0, (self.total_sq - self.total_s * mean) / (self.n - 1))

    def outcomes(self, run: int) -> analytics.Outcomes:
        """Run `run`'s calls so far, as the analytics aggregate them."""
        moments = stats.Moments.from_sums(
            self.n, float(self.total_s[run]), float(self.total_sq[run])
        )
        assert moments is not None
        return analytics.Outcomes(
            calls=self.n,
            completed=self.n,
            durations=self.n,
            duration_mean=moments.mean,
            duration_var=moments.var,
            analysed=self.n,
            automated=int(self.automated[run]),
        )


@dataclass
class Looks:
    """Where each run first crossed (the call count, 0 if never) and its arms then and before."""

    first: np.ndarray
    at: dict[int, tuple[Arm, Arm]]
    before: dict[int, tuple[Arm, Arm]]
    last: tuple[Arm, Arm]


def _z2_rates(a: Arm, b: Arm) -> np.ndarray:
    pooled = (a.automated + b.automated) / (a.n + b.n)
    var = pooled * (1 - pooled) * (1 / a.n + 1 / b.n)
    diff2 = (a.automated / a.n - b.automated / b.n) ** 2
    z2: np.ndarray = np.divide(diff2, var, out=np.zeros(RUNS), where=var > 0)
    return z2


def _z2_means(a: Arm, b: Arm) -> np.ndarray:
    var = a.var() / a.n + b.var() / b.n
    diff2 = (a.total_s / a.n - b.total_s / b.n) ** 2
    z2: np.ndarray = np.divide(diff2, var, out=np.zeros(RUNS), where=var > 0)
    return z2


def _compare_after_every_call(
    rate_b: float, calls: int, crossed: Callable[[Arm, Arm, float], np.ndarray]
) -> Looks:
    """Calls alternate between arms A and B; after each, `crossed(a, b, n_eff)` says which runs
    now declare a difference."""
    rng = np.random.default_rng(SEED)
    a, b = Arm.empty(), Arm.empty()
    first = np.zeros(RUNS, dtype=int)
    at: dict[int, tuple[Arm, Arm]] = {}
    before: dict[int, tuple[Arm, Arm]] = {}
    previous = (a.copy(), b.copy())
    for call in range(1, calls + 1):
        (a if call % 2 else b).add(rng, BASE_RATE if call % 2 else rate_b)
        if min(a.n, b.n) >= analytics.MIN_SAMPLE_SIZE:
            new = crossed(a, b, 1 / (1 / a.n + 1 / b.n)) & (first == 0)
            if new.any():
                first[new] = call
                for run in np.flatnonzero(new):
                    at[int(run)], before[int(run)] = (a.copy(), b.copy()), previous
            if (first > 0).all():
                break
        previous = (a.copy(), b.copy())
    return Looks(first, at, before, (a, b))


def _verdict_crossed(a: Arm, b: Arm, n_eff: float) -> np.ndarray:
    bound = stats.sequential_z(n_eff, VERDICT_ALPHA) ** 2
    return (_z2_rates(a, b) >= bound) | (_z2_means(a, b) >= bound)


def _verdict(arms: tuple[Arm, Arm], run: int) -> str:
    a, b = arms
    return analytics.compare(b.outcomes(run), a.outcomes(run), "A").verdict


def _upper_99(count: int) -> float:
    interval = stats.wilson_interval(count, RUNS, Z_99)
    assert interval is not None
    return interval[1]


def test_a_a_comparisons_looked_at_after_every_call_rarely_declare_a_difference() -> None:
    looks = _compare_after_every_call(BASE_RATE, AA_CALLS, _verdict_crossed)
    declared = int((looks.first > 0).sum())
    print(
        f"\nA/A, {RUNS} runs of {AA_CALLS} calls, verdict after every call: "
        f"{declared} ({declared / RUNS:.2%}) ever declared a difference, "
        f"99% upper bound {_upper_99(declared):.2%}"
    )
    assert _upper_99(declared) <= NOMINAL

    # The store decides as the simulation did, at every run's decisive looks.
    for run in range(RUNS):
        if looks.first[run]:
            assert _verdict(looks.at[run], run) in ("better", "worse"), run
            assert _verdict(looks.before[run], run) in ("no clear difference", "too few calls")
        else:
            assert _verdict(looks.last, run) == "no clear difference", run


def test_a_fixed_sample_test_looked_at_after_every_call_would_not() -> None:
    """Why the sequential test: the z-test at 5%, looked at after every call, on the same
    A/A runs, declares a difference many times more often than 5%."""
    fixed = stats.Z_95**2
    looks = _compare_after_every_call(BASE_RATE, AA_CALLS, lambda a, b, _: _z2_rates(a, b) >= fixed)
    share = float((looks.first > 0).mean())
    print(f"\nA/A, the fixed-sample z-test after every call: {share:.1%} ever 'significant'")
    assert share > 4 * NOMINAL


def test_median_calls_to_a_verdict_with_a_10_point_difference() -> None:
    looks = _compare_after_every_call(BASE_RATE + 0.1, POWER_CALLS, _verdict_crossed)
    reached = looks.first[looks.first > 0]
    quartiles = np.percentile(reached, [25, 50, 75])
    # A fixed-sample test with 80% power at 5% two-sided needs this many calls (both arms).
    p, q = BASE_RATE, BASE_RATE + 0.1
    fixed_n = 2 * math.ceil((1.959964 + 0.841621) ** 2 * (p * (1 - p) + q * (1 - q)) / 0.01)
    print(
        f"\n{int(BASE_RATE * 100)}% -> {int(q * 100)}% automation, verdict after every call: "
        f"{len(reached) / RUNS:.1%} of {RUNS} runs reached one within {POWER_CALLS} calls; calls "
        f"to a verdict (both arms) p25 {quartiles[0]:.0f}, median {quartiles[1]:.0f}, p75 "
        f"{quartiles[2]:.0f} (a fixed-sample test with 80% power: {fixed_n}, looked at once)"
    )
    assert len(reached) / RUNS >= 0.99
    # Looking every day costs calls: fewer than twice what a single look at a planned sample
    # size would need.
    assert quartiles[1] < 2 * fixed_n
    wrong_way = [
        run for run in range(RUNS) if looks.first[run] and _verdict(looks.at[run], run) != "better"
    ]
    assert len(wrong_way) <= NOMINAL * RUNS / 10


@dataclass
class Variant:
    """One A/B arm's running sums, checked against a guardrail after every call."""

    hits: np.ndarray
    total_s: np.ndarray
    total_sq: np.ndarray


def _trip_bound(rule: guardrails.Rule, n: int) -> int:
    """The most automated calls of `n` with which the store's `breach` trips a `<` rule (-1:
    none), by bisection: it trips for every count up to that one and for none above."""

    def trips(k: int) -> bool:
        return guardrails.breach("b", rule, analytics.Outcomes(analysed=n, automated=k)) is not None

    low, high = -1, n
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if trips(mid) else (low, mid - 1)
    return low


def test_a_variant_meeting_its_guardrail_rarely_trips_it() -> None:
    rule = guardrails.Rule("automation_rate", "<", BASE_RATE, guardrails.DEFAULT_MIN_CALLS)
    rng = np.random.default_rng(SEED)
    hits = np.zeros(RUNS)
    tripped = np.zeros(RUNS, dtype=bool)
    for n in range(1, AA_CALLS + 1):
        hits += rng.random(RUNS) < BASE_RATE
        tripped |= hits <= _trip_bound(rule, n)
    trips = int(tripped.sum())
    print(
        f"\nautomation rate exactly at a '< {BASE_RATE}' guardrail, {RUNS} runs of {AA_CALLS} "
        f"calls, checked after each: {trips} ({trips / RUNS:.2%}) tripped"
    )
    assert _upper_99(trips) <= NOMINAL


def test_a_variant_whose_mean_duration_meets_its_guardrail_rarely_trips_it() -> None:
    rule = guardrails.Rule("mean_duration_s", ">", DURATION_MEAN_S, guardrails.DEFAULT_MIN_CALLS)
    looks = _compare_after_every_call(
        BASE_RATE,
        AA_CALLS,
        lambda a, _b, _n: (
            (a.total_s / a.n - stats.sequential_z(a.n) * np.sqrt(a.var() / a.n)) > rule.threshold
        ),
    )
    trips = int((looks.first > 0).sum())
    print(
        f"\nmean duration exactly at a '> {rule.threshold:.0f} s' guardrail, {RUNS} runs of "
        f"{AA_CALLS // 2} calls, checked after each: {trips} ({trips / RUNS:.2%}) tripped"
    )
    assert _upper_99(trips) <= NOMINAL
    for run in range(RUNS):
        if looks.first[run]:
            assert guardrails.breach("A", rule, looks.at[run][0].outcomes(run)) is not None
            assert guardrails.breach("A", rule, looks.before[run][0].outcomes(run)) is None
        else:
            assert guardrails.breach("A", rule, looks.last[0].outcomes(run)) is None


@pytest.mark.parametrize("n", [30, 100, 1000])
def test_trip_bound_is_the_store_rule(n: int) -> None:
    rule = guardrails.Rule("automation_rate", "<", 0.5, 30)
    bound = _trip_bound(rule, n)
    assert guardrails.breach("b", rule, analytics.Outcomes(analysed=n, automated=bound))
    assert not guardrails.breach("b", rule, analytics.Outcomes(analysed=n, automated=bound + 1))

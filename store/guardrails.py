"""Guardrails on a channel's A/B test: a variant that is confidently breaking a rule loses its
weight, so its callers move to the other variants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Literal, get_args

import asyncpg

from store import analytics, audit, channels, stats
from store.errors import ChannelNotFound, InvalidConfig, RevisionConflict

Metric = Literal["automation_rate", "negative_sentiment_share", "mean_duration_s"]
METRICS: tuple[str, ...] = get_args(Metric)
# Metrics that are shares of calls, so their thresholds lie between 0 and 1.
RATE_METRICS = ("automation_rate", "negative_sentiment_share")
# A variant breaks a rule when its metric is below (<) or above (>) the threshold.
Op = Literal["<", ">"]
MAX_RULES = 20
# A rule without min_calls waits for as many calls as the version comparison does.
DEFAULT_MIN_CALLS = analytics.MIN_SAMPLE_SIZE
GUARDRAIL_ACTOR = "guardrail"
TRIP_ACTION = "guardrail.trip"
# Advisory lock class (first key) for guardrail evaluation; the second key is the channel's
# hash. Serialises evaluations of one channel so two of them never zero the last two variants.
EVALUATION_LOCK_CLASS = 0x67726400

SELECT_GUARDRAILS = (
    "SELECT number, rules, updated_at, updated_by FROM channel_guardrails WHERE number = $1"
)
LOCK_CHANNEL_ROW = "SELECT number FROM channels WHERE number = $1 FOR SHARE"
UPSERT_GUARDRAILS = """
INSERT INTO channel_guardrails (number, rules, updated_by) VALUES ($1, $2, $3)
ON CONFLICT (number) DO UPDATE
SET rules = EXCLUDED.rules, updated_at = now(), updated_by = EXCLUDED.updated_by
RETURNING number, rules, updated_at, updated_by
"""
LOCK_EVALUATION = "SELECT pg_advisory_xact_lock($1, hashtext($2))"


class InvalidGuardrails(InvalidConfig):
    code = "invalid_guardrails"


@dataclass(frozen=True)
class Rule:
    """The variant breaks the rule when `metric op threshold` holds, e.g. automation_rate < 0.5."""

    metric: str
    op: str
    threshold: float
    min_calls: int


@dataclass(frozen=True)
class Guardrails:
    number: str
    rules: tuple[Rule, ...]
    updated_at: datetime | None
    updated_by: str | None

    def public(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "rules": [asdict(r) for r in self.rules],
            "method": stats.SEQUENTIAL_METHOD,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }


@dataclass(frozen=True)
class Trip:
    """A variant's evidence of breaking a rule: the numbers the audit log keeps."""

    variant: str
    rule: Rule
    observed: float
    ci: tuple[float, float]
    calls: int

    def note(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "metric": self.rule.metric,
            "op": self.rule.op,
            "threshold": self.rule.threshold,
            "min_calls": self.rule.min_calls,
            "observed": self.observed,
            "ci": list(self.ci),
            "calls": self.calls,
            "method": stats.SEQUENTIAL_METHOD,
        }


def _guardrails(row: asyncpg.Record) -> Guardrails:
    return Guardrails(
        number=row["number"],
        rules=tuple(Rule(**r) for r in row["rules"]),
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


async def get_guardrails(pool: asyncpg.Pool, number: str) -> Guardrails:
    """A channel's guardrails (no rules until some are set); ChannelNotFound if no channel."""
    row = await pool.fetchrow(SELECT_GUARDRAILS, number)
    if row is not None:
        return _guardrails(row)
    if await channels.find_channel(pool, number) is None:
        raise ChannelNotFound(f"no channel {number}")
    return Guardrails(number, (), None, None)


async def set_guardrails(
    pool: asyncpg.Pool, number: str, rules: tuple[Rule, ...], actor: str
) -> Guardrails:
    """Replace a channel's guardrail rules; audited."""
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchrow(LOCK_CHANNEL_ROW, number) is None:
            raise ChannelNotFound(f"no channel {number}")
        before = await conn.fetchrow(SELECT_GUARDRAILS, number)
        row = await conn.fetchrow(UPSERT_GUARDRAILS, number, [asdict(r) for r in rules], actor)
        after = _guardrails(row)
        await audit.record(
            conn,
            actor,
            "channel.guardrails",
            channel=number,
            before=_guardrails(before).public()["rules"] if before else None,
            after=after.public()["rules"],
        )
    return after


def _evidence(
    metric: str, outcomes: analytics.Outcomes
) -> tuple[float, tuple[float, float], int] | None:
    """(observed, always-valid 95% interval, calls measured) of a metric; None while it cannot
    be measured."""
    if metric == "mean_duration_s":
        moments = outcomes.duration_moments
        ci = stats.sequential_mean_interval(moments) if moments is not None else None
        observed, n = (moments.mean, moments.n) if moments is not None else (None, 0)
    else:
        hits, n = (
            (outcomes.automated, outcomes.analysed)
            if metric == "automation_rate"
            else (outcomes.negative, outcomes.sentiments)
        )
        observed = hits / n if n else None
        ci = stats.sequential_proportion_interval(hits, n)
    if observed is None or ci is None:
        return None
    return observed, ci, n


def breach(variant: str, rule: Rule, outcomes: analytics.Outcomes) -> Trip | None:
    """A Trip when the variant has min_calls measured calls and its whole always-valid 95%
    interval (mSPRT) lies on the breaking side of the threshold; None otherwise (a point
    estimate alone never trips). The interval holds over every look, so checking after each
    analysis does not trip a variant that meets its rule more often than 5% of the time."""
    evidence = _evidence(rule.metric, outcomes)
    if evidence is None:
        return None
    observed, (low, high), n = evidence
    confident = high < rule.threshold if rule.op == "<" else low > rule.threshold
    return (
        Trip(variant, rule, observed, (low, high), n) if n >= rule.min_calls and confident else None
    )


def plan_trips(
    variants: Sequence[channels.Variant],
    outcomes: dict[str, analytics.Outcomes],
    rules: Sequence[Rule],
) -> list[Trip]:
    """The variants to zero, first breach each; never the last weight left on the channel."""
    remaining = sum(v.weight for v in variants)
    trips = []
    for v in variants:
        if v.weight == 0 or v.label not in outcomes:
            continue
        found = (breach(v.label, rule, outcomes[v.label]) for rule in rules)
        trip = next((t for t in found if t is not None), None)
        if trip is not None and remaining - v.weight > 0:
            trips.append(trip)
            remaining -= v.weight
    return trips


def _zeroed(variants: tuple[channels.Variant, ...], label: str) -> tuple[channels.Variant, ...]:
    return tuple(replace(v, weight=0) if v.label == label else v for v in variants)


async def evaluate(pool: asyncpg.Pool, number: str) -> list[Trip]:
    """Check the channel's current variants against its guardrails; zero those that trip.

    Each trip is one routing change through `channels.set_channel` (audited as guardrail.trip
    with its numbers, announced on the change feed); only the weight moves.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(LOCK_EVALUATION, EVALUATION_LOCK_CLASS, number)
        row = await conn.fetchrow(SELECT_GUARDRAILS, number)
        routing = await channels.find_channel(conn, number) if row else None
        if row is None or routing is None:
            return []
        outcomes = await analytics.current_variant_counts(conn, number, routing.variants)
        trips = plan_trips(routing.variants, outcomes, _guardrails(row).rules)
        applied: list[Trip] = []
        for trip in trips:
            try:
                routing = await channels.set_channel(
                    pool,
                    number,
                    _zeroed(routing.variants, trip.variant),
                    routing.sticky,
                    GUARDRAIL_ACTOR,
                    action=TRIP_ACTION,
                    audit_note=trip.note(),
                    if_revision=routing.revision,
                )
            except RevisionConflict:
                # Someone re-routed the channel meanwhile: their routing stands, and the next
                # analysis re-checks it.
                break
            applied.append(trip)
    return applied

"""Per-version and per-variant call analytics: aggregated in SQL, compared with store.stats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from store import rollups, stats
from store.channels import Variant
from store.snapshots import DRAFT

# Fewer analysed calls than this on either side and no verdict is given: the sequential tests
# rest on normal approximations that the usual rule of thumb trusts from about 30 observations.
MIN_SAMPLE_SIZE = 30
# Two-sided significance level of a verdict (matches the 95% intervals). A verdict may come from
# either of two metrics, so each one's p-value is Bonferroni-adjusted (doubled): an A/A
# comparison then ends in "better" or "worse" at most 5% of the time, over every look.
SIGNIFICANCE = 0.05
VERDICT_METRICS = 2

VERDICT_BETTER = "better"
VERDICT_WORSE = "worse"
VERDICT_UNCLEAR = "no clear difference"
VERDICT_TOO_FEW = "too few calls"

# The time window when a query names no bounds: every call ever recorded.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)

# Settings of every analytics aggregate, local to its transaction (one round trip):
# - jit off: compiling an aggregate costs more than it saves on the few thousand rollup rows a
#   report reads.
# - custom plans only: asyncpg prepares each query, and after five executions on a connection
#   Postgres may switch to a generic plan, which cannot see the window bounds. Planning afresh
#   costs under a millisecond.
ANALYTICS_SETTINGS = "SET LOCAL jit = off; SET LOCAL plan_cache_mode = force_custom_plan"
# Outcome counts of a group of rollup rows (migration 0007); every query below aggregates these
# under the same names. Mean and sample variance come from the exact numeric sums.
_COUNTS = """
    sum(calls)::bigint AS calls,
    sum(completed)::bigint AS completed,
    sum(durations)::bigint AS durations,
    (sum(duration_sum) / nullif(sum(durations), 0))::float8 AS duration_mean,
    ((sum(duration_sumsq) - sum(duration_sum) ^ 2 / nullif(sum(durations), 0))
        / nullif(sum(durations) - 1, 0))::float8 AS duration_var,
    sum(positive + neutral + negative)::bigint AS sentiments,
    sum(positive)::bigint AS positive,
    sum(neutral)::bigint AS neutral,
    sum(negative)::bigint AS negative,
    sum(analysed)::bigint AS analysed,
    sum(automated)::bigint AS automated
"""
# The merged duration histogram (store.rollups.histogram reads it), for the percentiles.
_HISTOGRAM = """,
    sum(duration_histogram) AS duration_histogram
"""
# A group whose calls were all moved elsewhere by updates has rows that sum to nothing.
_NOT_EMPTY = "HAVING sum(calls) > 0"

# $2, $3: the window rounded to hours (rollups.hour_window).
# $5 = split the draft by revision; otherwise every draft revision is one "draft" group.
VERSION_STATS = (
    "SELECT version, CASE WHEN $5::boolean THEN draft_revision END AS draft_revision,"
    + _COUNTS
    + _HISTOGRAM
    + "FROM "
    + rollups.of("$1::text", "$4::text")
    + """ r
WHERE agent_id = $1 AND hour >= $2 AND hour < $3
  AND ($4::text IS NULL OR channel = $4)
GROUP BY 1, 2
"""
    + _NOT_EMPTY
    + """
ORDER BY version NULLS LAST, draft_revision
"""
)
# Exact for any window: rollups for its whole hours ($4, $5: rollups.whole_hours_within) and the
# calls of its partial hours at either end, counted the way the rollups count them, so
# the cost is bounded by one channel's calls in two hours, not by its history.
VARIANT_STATS = (
    "SELECT variant, agent_id, version,"  # noqa: S608 (module constants only)
    + _COUNTS
    + _HISTOGRAM
    + """
FROM (
    SELECT * FROM """
    + rollups.of("NULL::text", "$1::text")
    + """ w
    WHERE channel = $1 AND hour >= $4 AND hour < $5
    UNION ALL
    SELECT * FROM call_rollup_changes(ARRAY(
        SELECT c FROM calls c
        WHERE c.channel = $1 AND c.started_at >= $2 AND c.started_at < $3
          AND (c.started_at < $4 OR c.started_at >= $5)), '{}')
) r
GROUP BY variant, agent_id, version
"""
    + _NOT_EMPTY
    + """
ORDER BY variant, agent_id, version NULLS LAST
"""
)
# Only calls served by the variants as they are now: a label re-pointed at another version
# starts afresh. No percentiles: this runs after every analysis of a call on the channel.
CURRENT_VARIANT_COUNTS = (
    "SELECT r.variant,"  # noqa: S608 (joins module constants only, never input)
    + _COUNTS
    + "FROM "
    + rollups.of("NULL::text", "$1::text")
    + """ r
JOIN unnest($2::text[], $3::text[], $4::integer[]) AS v(label, agent_id, version)
  ON r.variant = v.label AND r.agent_id = v.agent_id AND r.version IS NOT DISTINCT FROM v.version
WHERE r.channel = $1
GROUP BY r.variant
"""
)


def _version_json(version: int | None) -> int | str:
    """A served version as the reports name it: its number, or "draft"."""
    return DRAFT if version is None else version


@dataclass(frozen=True)
class Outcomes:
    """Aggregated outcomes of a group of calls (a version, a draft revision or a variant)."""

    calls: int = 0
    completed: int = 0
    durations: int = 0
    duration_mean: float | None = None
    duration_var: float | None = None
    duration_p50: float | None = None
    duration_p90: float | None = None
    sentiments: int = 0
    positive: int = 0
    neutral: int = 0
    negative: int = 0
    analysed: int = 0
    automated: int = 0

    @property
    def automation_rate(self) -> float | None:
        return self.automated / self.analysed if self.analysed else None

    @property
    def automation_rate_ci(self) -> tuple[float, float] | None:
        return stats.wilson_interval(self.automated, self.analysed)

    @property
    def duration_moments(self) -> stats.Moments | None:
        if self.duration_mean is None:
            return None
        return stats.Moments(self.durations, self.duration_mean, self.duration_var or 0.0)

    def share(self, sentiment: str) -> float | None:
        count: int = getattr(self, sentiment)
        return count / self.sentiments if self.sentiments else None

    def public(self) -> dict[str, Any]:
        """The outcome fields of an analytics row."""
        ci = self.automation_rate_ci
        return {
            "calls": self.calls,
            "completed": self.completed,
            "analysed": self.analysed,
            "duration_s": {
                "mean": self.duration_mean,
                "p50": self.duration_p50,
                "p90": self.duration_p90,
            },
            "sentiment": {s: self.share(s) for s in ("positive", "neutral", "negative")},
            "automation_rate": self.automation_rate,
            "automation_rate_ci": list(ci) if ci else None,
        }


@dataclass(frozen=True)
class VersionOutcomes:
    version: int | None  # None: the draft
    draft_revision: int | None  # set only when the draft is split by revision
    outcomes: Outcomes

    @property
    def label(self) -> int | str:
        return _version_json(self.version)


@dataclass(frozen=True)
class VariantOutcomes:
    variant: str
    agent_id: str
    version: int | None
    outcomes: Outcomes


@dataclass(frozen=True)
class Comparison:
    """One group against a baseline: differences, always-valid p-values (Bonferroni-adjusted
    for the two metrics) and the verdict they support."""

    baseline: int | str
    automation_rate_diff: float | None
    automation_rate_p_value: float | None
    mean_duration_diff_s: float | None
    mean_duration_p_value: float | None
    verdict: str
    min_sample_size: int = MIN_SAMPLE_SIZE
    method: str = stats.SEQUENTIAL_METHOD


def _outcomes(row: asyncpg.Record) -> Outcomes:
    columns = set(row.keys())
    fields = {k: row[k] for k in Outcomes.__dataclass_fields__ if k in columns}
    if "duration_histogram" in columns:
        found = rollups.percentiles(rollups.histogram(row["duration_histogram"]), (0.5, 0.9))
        if found:
            fields["duration_p50"], fields["duration_p90"] = found
    return Outcomes(**fields)


async def _fetch_aggregate(pool: asyncpg.Pool, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run an analytics aggregate under ANALYTICS_SETTINGS."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(ANALYTICS_SETTINGS)
        rows: list[asyncpg.Record] = await conn.fetch(query, *args)
        return rows


async def version_outcomes(
    pool: asyncpg.Pool,
    agent_id: str,
    since: datetime,
    until: datetime,
    *,
    channel: str | None = None,
    split_draft: bool = False,
) -> list[VersionOutcomes]:
    """Outcomes per version served in [since, until) widened to whole hours
    (rollups.hour_window): versions ascending, then the draft."""
    since, until = rollups.hour_window(since, until)
    rows = await _fetch_aggregate(pool, VERSION_STATS, agent_id, since, until, channel, split_draft)
    return [VersionOutcomes(r["version"], r["draft_revision"], _outcomes(r)) for r in rows]


async def variant_outcomes(
    pool: asyncpg.Pool, channel: str, since: datetime, until: datetime
) -> list[VariantOutcomes]:
    """Outcomes per (variant label, agent, version) served on `channel` in exactly [since,
    until): a rollout's step starts at any second."""
    hours = rollups.whole_hours_within(since, until)
    rows = await _fetch_aggregate(pool, VARIANT_STATS, channel, since, until, *hours)
    return [VariantOutcomes(r["variant"], r["agent_id"], r["version"], _outcomes(r)) for r in rows]


async def current_variant_counts(
    conn: asyncpg.Connection | asyncpg.Pool, channel: str, variants: Sequence[Variant]
) -> dict[str, Outcomes]:
    """Outcomes (without percentiles) by label of the calls each current variant served."""
    rows = await conn.fetch(
        CURRENT_VARIANT_COUNTS,
        channel,
        [v.label for v in variants],
        [v.agent_id for v in variants],
        [v.version for v in variants],
    )
    return {r["variant"]: _outcomes(r) for r in rows}


def _adjusted(p_value: float | None) -> float | None:
    return None if p_value is None else min(1.0, p_value * VERDICT_METRICS)


def compare(group: Outcomes, baseline: Outcomes, baseline_label: int | str) -> Comparison:
    """Automation rate (primary) and mean duration (secondary) vs a baseline, each by an mSPRT,
    so that a verdict stays honest however often it is looked at.

    A lower mean duration counts as better: the same outcome in less time.
    """
    rate, base_rate = group.automation_rate, baseline.automation_rate
    rate_diff = rate - base_rate if rate is not None and base_rate is not None else None
    rate_p = _adjusted(
        stats.two_proportions_test(
            group.automated, group.analysed, baseline.automated, baseline.analysed
        )
    )
    duration_diff = duration_p = None
    moments, base_moments = group.duration_moments, baseline.duration_moments
    if moments is not None and base_moments is not None:
        duration_diff = moments.mean - base_moments.mean
        duration_p = _adjusted(stats.two_means_test(moments, base_moments))
    if min(group.analysed, baseline.analysed) < MIN_SAMPLE_SIZE:
        verdict = VERDICT_TOO_FEW
    elif rate_p is not None and rate_diff is not None and rate_p <= SIGNIFICANCE:
        verdict = VERDICT_BETTER if rate_diff > 0 else VERDICT_WORSE
    elif (
        duration_p is not None
        and duration_diff is not None
        and min(group.durations, baseline.durations) >= MIN_SAMPLE_SIZE
        and duration_p <= SIGNIFICANCE
    ):
        verdict = VERDICT_BETTER if duration_diff < 0 else VERDICT_WORSE
    else:
        verdict = VERDICT_UNCLEAR
    return Comparison(baseline_label, rate_diff, rate_p, duration_diff, duration_p, verdict)


def _row(
    key: dict[str, Any], outcomes: Outcomes, baseline: tuple[int | str, Outcomes] | None
) -> dict[str, Any]:
    comparison = compare(outcomes, baseline[1], baseline[0]) if baseline else None
    return {**key, **outcomes.public(), "comparison": asdict(comparison) if comparison else None}


def version_report(
    groups: list[VersionOutcomes], baseline: int | None = None
) -> list[dict[str, Any]]:
    """Analytics rows, each compared with version `baseline` or else with the row before it.

    A baseline version with no calls in the window compares as empty: "too few calls".
    """
    chosen: tuple[int | str, Outcomes] | None = None
    if baseline is not None:
        found = [g.outcomes for g in groups if g.version == baseline]
        chosen = (baseline, found[0] if found else Outcomes())
    rows = []
    for i, group in enumerate(groups):
        key: dict[str, Any] = {"version": group.label}
        if group.draft_revision is not None:
            key["draft_revision"] = group.draft_revision
        if baseline is None:
            previous = groups[i - 1] if i else None
            against = (previous.label, previous.outcomes) if previous else None
        else:
            against = None if group.version == baseline else chosen
        rows.append(_row(key, group.outcomes, against))
    return rows


def _current_position(group: VariantOutcomes, current: Sequence[Variant]) -> int | None:
    for i, v in enumerate(current):
        if (v.label, v.agent_id, v.version) == (group.variant, group.agent_id, group.version):
            return i
    return None


def variant_report(
    groups: list[VariantOutcomes], current: Sequence[Variant], baseline: str | None = None
) -> list[dict[str, Any]]:
    """A/B rows: the channel's current variants in routing order (with their weight), then
    arms no longer routed to. Each is compared with the `baseline` label, by default the
    first current variant (the control)."""
    positions = [_current_position(g, current) for g in groups]
    order = sorted(range(len(groups)), key=lambda i: (positions[i] is None, positions[i] or 0, i))
    label = baseline or (current[0].label if current else None)
    if label is None and groups:
        label = groups[order[0]].variant
    # Prefer the arm the label routes to now (it sorts first); a retired label, its history.
    base_index = next((i for i in order if groups[i].variant == label), None)
    chosen = None
    if label is not None:
        chosen = (label, groups[base_index].outcomes if base_index is not None else Outcomes())
    rows = []
    for i in order:
        group, position = groups[i], positions[i]
        key = {
            "variant": group.variant,
            "agent_id": group.agent_id,
            "version": _version_json(group.version),
            "weight": current[position].weight if position is not None else None,
        }
        rows.append(_row(key, group.outcomes, None if i == base_index else chosen))
    return rows

"""Hourly call rollups (migration 0007): their duration histograms, the hour-rounded windows
analytics read them over, compaction of the deltas, and the backfill from `calls`.

docs/design.md, section 12, says why rollups are kept this way.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from store.db import every

# The histogram of migration 0007 (rollup_duration_bucket, rollup_duration_weight): bucket 0
# holds [0, 1) s, bucket i >= 1 holds [GAMMA^(i-1), GAMMA^i) s, the last one everything longer.
# A bucket's representative is within RELATIVE_ERROR of every value in it (DDSketch's mapping:
# GAMMA = (1 + a) / (1 - a)); bucket 0 is within ZERO_BUCKET_ERROR_S.
RELATIVE_ERROR = 0.04
GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
BUCKETS = 144
ZERO_BUCKET_ERROR_S = 0.5
# Upper end of the range where the relative bound holds (about 26 h).
MAX_EXACT_S = GAMMA ** (BUCKETS - 1)
# Decimal digits per bucket in the packed numeric.
_DIGITS_BASE = 10**10

# A whole hour, and the hours the backfill handles per transaction (one hour's calls are
# gathered into one array, so a chunk must stay well within memory).
HOUR = timedelta(hours=1)

COMPACT = "SELECT compact_call_rollups()"
# The backfill holds the compaction's lock for a session, then rebuilds one hour per
# REPEATABLE READ transaction: a delta committed after its snapshot belongs to a change the
# snapshot does not see, so it survives, and one the snapshot sees is replaced by the call's
# state. Calls are never locked, so recording goes on meanwhile. Calls still pending (at or
# above the horizon, migration 0015) are left to the compaction, which the lock holds off.
LOCK = "SELECT pg_advisory_lock(hashtext('agentver:call_rollups'))"
UNLOCK = "SELECT pg_advisory_unlock(hashtext('agentver:call_rollups'))"
CALLS_SPAN = "SELECT min(started_at), max(started_at) FROM calls"
NEXT_CALL = "SELECT min(started_at) FROM calls WHERE started_at >= $1"
DROP_HOUR_DELTAS = "DELETE FROM call_rollup_deltas WHERE hour = $1"
DROP_HOUR_ROLLUPS = "DELETE FROM call_rollups WHERE hour = $1"
BUILD_HOUR = """
INSERT INTO call_rollups
SELECT * FROM call_rollup_changes(
    ARRAY(SELECT c FROM calls c
          WHERE c.started_at >= $1 AND c.started_at < $1 + interval '1 hour'
            AND c.recorded_xid < (SELECT xid FROM call_rollup_horizon)),
    '{}')
"""


def of(agent: str, channel: str) -> str:
    """The rollup rows of `agent` and `channel`, SQL expressions from module constants, never
    input (`NULL::text`: any), as a FROM item: the folded rows, which the reader's own
    conditions select through their indexes, and the pending calls' aggregate (migration
    0015), computed for these alone."""
    pending = f"call_rollups_pending({agent}, {channel})"
    return f"(SELECT * FROM call_rollups_folded UNION ALL SELECT * FROM {pending})"  # noqa: S608


def floor_hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_window(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """[since, until) widened to whole UTC hours: every call in the window is counted, and so
    are the others of its first and last hour."""
    end = floor_hour(until)
    return floor_hour(since), end if end == until else end + HOUR


def whole_hours_within(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """The whole UTC hours inside [since, until) (empty when from >= to): what rollups answer
    exactly; a window's partial hours at either end are read from the calls themselves."""
    start = floor_hour(since)
    return start if start == since else start + HOUR, floor_hour(until)


def histogram(packed: Decimal | int | None) -> list[int]:
    """Bucket counts of a packed histogram (a sum of rollup_duration_weight values)."""
    rest = int(packed or 0)
    counts = []
    for _ in range(BUCKETS):
        rest, count = divmod(rest, _DIGITS_BASE)
        counts.append(count)
    if rest:
        raise ValueError("not a packed duration histogram")
    return counts


def representative(bucket: int) -> float:
    """The value a bucket stands for: within RELATIVE_ERROR of each of its values."""
    if bucket == 0:
        return ZERO_BUCKET_ERROR_S
    return 2 * GAMMA**bucket / (GAMMA + 1)


def percentiles(counts: Sequence[int], quantiles: Sequence[float]) -> list[float] | None:
    """Quantiles interpolated as percentile_cont does (between the order statistics at rank
    q * (n - 1)), each order statistic read as its bucket's representative; so each is within
    RELATIVE_ERROR of the exact percentile (ZERO_BUCKET_ERROR_S below 1 s). None when empty."""
    n = sum(counts)
    if n == 0:
        return None
    cumulative = [0]
    for count in counts:
        cumulative.append(cumulative[-1] + count)

    def order_statistic(rank: int) -> float:
        # The bucket b whose calls hold ranks cumulative[b] .. cumulative[b + 1] - 1.
        low, high = 0, len(counts) - 1
        while low < high:
            mid = (low + high) // 2
            if cumulative[mid + 1] <= rank:
                low = mid + 1
            else:
                high = mid
        return representative(low)

    found = []
    for q in quantiles:
        position = q * (n - 1)
        below = math.floor(position)
        fraction = position - below
        value = order_statistic(below)
        if fraction:
            value += fraction * (order_statistic(below + 1) - value)
        found.append(value)
    return found


async def compact(pool: asyncpg.Pool) -> int:
    """Fold committed deltas and the calls recorded since the last run into the rollups; the
    number of deltas and calls folded (0 if another run holds the lock)."""
    folded: int = await pool.fetchval(COMPACT)
    return folded


async def compact_forever(
    pool: asyncpg.Pool, interval_s: float, compacted: Callable[[int, float], object]
) -> None:
    """Compact every `interval_s` until cancelled, telling `compacted` how much each run folded
    and in how many seconds; a failed run is logged and retried. The interval bounds only what
    a read meets besides the rollups: the deltas and the calls recorded since the last run,
    which each read aggregates (those of its agent or channel)."""

    async def run() -> None:
        started = time.perf_counter()
        folded = await compact(pool)
        compacted(folded, time.perf_counter() - started)

    await every(interval_s, run, "rollup_compaction_failed")


async def _hours_with_calls(conn: asyncpg.Connection) -> AsyncIterator[datetime]:
    span = await conn.fetchrow(CALLS_SPAN)
    if span[0] is None:
        return
    hour, last = floor_hour(span[0]), floor_hour(span[1])
    while hour <= last:
        yield hour
        following = await conn.fetchval(NEXT_CALL, hour + HOUR)
        if following is None:
            return
        hour = floor_hour(following)


async def backfill(database_url: str) -> int:
    """Rebuild the rollups of every hour that has calls from the calls themselves; idempotent,
    and safe while calls are recorded. Returns the number of hours rebuilt."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(LOCK)
        try:
            rebuilt = 0
            async for hour in _hours_with_calls(conn):
                async with conn.transaction(isolation="repeatable_read"):
                    await conn.execute(DROP_HOUR_DELTAS, hour)
                    await conn.execute(DROP_HOUR_ROLLUPS, hour)
                    await conn.execute(BUILD_HOUR, hour)
                rebuilt += 1
            return rebuilt
        finally:
            await conn.execute(UNLOCK)
    finally:
        await conn.close()

"""The monthly partitions of `calls` (migration 0011): created ahead of time, rows that landed in
the default partition moved into their month, and whole months dropped once past the retention
period (the hourly rollups keep their aggregates). The same upkeep keeps `call_endings` to the
endings still waiting for their calls.

docs/design.md, section 3, says why calls are partitioned this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg
import structlog

from store import calls, rollups
from store.db import every

# Months of partitions kept ready beyond the current one: the maintenance may fail for that long
# before a call lands in the default partition (where it is still recorded, and moved later).
AHEAD_MONTHS = 3
# How often the admin service maintains them: a new month's partition is due once a month, and a
# call in the default partition is moved within this delay.
MAINTENANCE_INTERVAL_S = 3600.0
# Days an ending waits in call_endings for its call: a call reaches Postgres within seconds of
# its ending, or when the spool holding it is replayed, once Postgres is back; an outage or a
# worker down longer than this is out of reach (the call is then recorded open).
ENDING_WAIT_DAYS = 30

ENSURE = "SELECT ensure_call_partitions($1)"
# Months that ended `$1` days ago or more, oldest first.
EXPIRED = """
SELECT starts FROM call_partitions WHERE ends <= now() - make_interval(days => $1) ORDER BY starts
"""
# Whether a month holds calls the rollups do not count yet (migration 0015): such a month is
# kept, keys and all, until a compaction has folded them (drop_call_partition checks it again
# under its lock).
PENDING_IN_MONTH = "SELECT call_month_pending($1)"
EXPIRE_KEYS = "SELECT expire_call_keys($1)"
DROP_PARTITION = "SELECT drop_call_partition($1)"

log = structlog.get_logger()


@dataclass(frozen=True)
class Maintenance:
    """What one maintenance run did: partitions created, the months dropped, and the endings
    settled (and calls they closed) and expired (store/calls.py `settle_endings`)."""

    created: int
    dropped: list[datetime]
    endings_settled: int = 0
    calls_closed: int = 0
    endings_expired: int = 0


async def maintain(pool: asyncpg.Pool, retention_days: int | None) -> Maintenance:
    """Create the partitions due (moving any rows of their months out of the default partition),
    then drop every month that ended `retention_days` ago or more (None: keep every call) once
    the rollups count all its calls. Each step is its own transaction; one that finds another
    session maintaining the partitions, or waits too long for a lock, is done by a later run.
    Then the endings spent or past waiting leave call_endings."""
    created = await pool.fetchval(ENSURE, AHEAD_MONTHS) or 0
    dropped = []
    months = [] if retention_days is None else await pool.fetch(EXPIRED, retention_days)
    if months:
        # Calls of an expired month still pending (replayed from a spool just now) are folded
        # first: the rollups outlive the rows only once they count them.
        await rollups.compact(pool)
        for (month,) in months:
            if await pool.fetchval(PENDING_IN_MONTH, month):
                continue
            keys = await pool.fetchval(EXPIRE_KEYS, month)
            if await pool.fetchval(DROP_PARTITION, month):
                dropped.append(month)
                log.info("call_partition_dropped", month=month.date().isoformat(), keys=keys)
    settled, closed = await calls.settle_endings(pool)
    expired = await pool.fetchval(calls.EXPIRE_ENDINGS, ENDING_WAIT_DAYS)
    if closed:
        # The race ENDINGS_AFTER describes: rare, and worth seeing if it is not.
        log.info("call_endings_closed_late", calls=closed)
    return Maintenance(created, dropped, settled, closed, expired)


async def maintain_forever(
    pool: asyncpg.Pool, retention_days: int | None, interval_s: float = MAINTENANCE_INTERVAL_S
) -> None:
    """Maintain every `interval_s` until cancelled; a failed run is logged and retried."""
    await every(
        interval_s, lambda: maintain(pool, retention_days), "call_partition_maintenance_failed"
    )

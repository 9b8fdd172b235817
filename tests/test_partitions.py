"""Calls partitioned by month (migration 0011): an unpartitioned table moved without losing a row
or counting one twice, provider retries recorded once across months, rows that land in the
default partition moved into their month, and retention dropping whole months (and their keys)
while the rollups keep the aggregates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from harness.postgres import scratch_database
from store import agents, calls, partitions, rollups
from store.calls import CallRecord, Candidate
from store.db import create_pool
from store.migrate import migrate, migration_files
from tests.call_rows import new_call
from tests.conftest import minimal_config
from tests.polling import eventually

PARTITIONED = "0011_partition_calls.sql"
# Calls as the router recorded them before 0011, spread over months (one far back), every
# outcome column both set and null, and their rollups kept by 0007's triggers.
OLD_CALLS = """
INSERT INTO calls (call_id, provider, provider_call_id, channel, from_number, agent_id, version,
                   draft_revision, config_hash, variant, routing_revision, status, started_at,
                   ended_at, duration_s, sentiment, automated, analysis)
SELECT 'call_' || g, 'twilio', 'CA' || g, '+14155550100', '+1415555' || lpad(g::text, 4, '0'),
       $1, CASE WHEN g % 5 = 0 THEN NULL ELSE 1 END, CASE WHEN g % 5 = 0 THEN 1 END, $2,
       CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, 1,
       CASE WHEN g % 7 = 0 THEN 'in-progress' ELSE 'completed' END, s.started,
       CASE WHEN g % 7 <> 0 THEN s.started + interval '1 minute' END,
       CASE WHEN g % 7 <> 0 THEN g % 600 END,
       (ARRAY['positive', 'neutral', 'negative', NULL])[1 + g % 4],
       CASE WHEN g % 3 = 0 THEN NULL ELSE g % 3 = 1 END,
       CASE WHEN g % 3 <> 0 THEN jsonb_build_object('fields', jsonb_build_object('n', g)) END
FROM generate_series(1, $3) AS g,
     LATERAL (SELECT CASE WHEN g = 1 THEN timestamptz '2019-03-04 05:06:07+00'
                          ELSE $4::timestamptz - make_interval(hours => g * 5) END AS started) s
"""
ROLLUPS = """
SELECT agent_id, version, draft_revision, channel, variant, hour, sum(calls), sum(completed),
       sum(durations), sum(duration_sum), sum(duration_sumsq), sum(positive), sum(neutral),
       sum(negative), sum(analysed), sum(automated), sum(duration_histogram)
FROM call_rollups_all
GROUP BY agent_id, version, draft_revision, channel, variant, hour
ORDER BY agent_id, hour, version, draft_revision, channel, variant
"""
ALL_CALLS = "SELECT * FROM calls ORDER BY call_id"
WHERE_EACH_CALL_IS = """
SELECT tableoid::regclass::text AS partition, count(*) FROM calls GROUP BY 1 ORDER BY 1
"""
NOW = datetime.now(UTC)


def month_of(t: datetime, later: int = 0) -> str:
    """The name of the partition of the month `later` months after `t`'s."""
    months = t.year * 12 + t.month - 1 + later
    return f"calls_p{months // 12:04d}{months % 12 + 1:02d}"


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[str]:
    """An empty database of its own (its partitions are the test's to create and drop)."""
    async with scratch_database(database_url, "partitions", migrated=False) as url:
        yield url


async def _served(pool: asyncpg.Pool) -> tuple[str, str]:
    """An agent with one published version: its id and that version's config hash."""
    agent = await agents.create_agent(pool, minimal_config(), "test")
    version = await agents.publish(pool, agent.id, "v1", "", "test")
    return agent.id, version.config_hash


def _candidate(agent_id: str, config_hash: str) -> tuple[Candidate, ...]:
    return (Candidate("a", agent_id, 1, None, config_hash),)


async def test_the_migration_moves_every_call_and_counts_none_twice(database: str) -> None:
    await migrate(database, before=PARTITIONED)
    pool = await create_pool(database)
    try:
        agent_id, config_hash = await _served(pool)
        await pool.execute(OLD_CALLS, agent_id, config_hash, 500, NOW)
        before: list[Any] = [tuple(r) for r in await pool.fetch(ALL_CALLS)]
        rollups_before = [tuple(r) for r in await pool.fetch(ROLLUPS)]

        # This migration, then every later one: the record path below is today's.
        later = [name for name, _ in migration_files() if name >= PARTITIONED]
        assert await migrate(database) == later
        await pool.expire_connections()  # plans and types cached for the old table

        after = [tuple(r) for r in await pool.fetch(ALL_CALLS)]
        # Migration 0015 adds the transaction that recorded each call: 0 for the calls the
        # rollups counted before it.
        assert [row[:-1] for row in after] == before and {row[-1] for row in after} == {0}
        assert [tuple(r) for r in await pool.fetch(ROLLUPS)] == rollups_before
        keys = await pool.fetch(
            "SELECT call_id, provider, provider_call_id, started_at FROM call_keys"
        )
        assert sorted(tuple(k) for k in keys) == sorted((r[0], r[1], r[2], r[12]) for r in before)
        # Each call in its month's partition, none in the default one.
        placed = {r["partition"]: r["count"] for r in await pool.fetch(WHERE_EACH_CALL_IS)}
        expected: dict[str, int] = {}
        for row in before:
            expected[month_of(row[12])] = expected.get(month_of(row[12]), 0) + 1
        assert placed == expected
        ready = {r[0] for r in await pool.fetch("SELECT name FROM call_partitions")}
        assert {month_of(NOW, m) for m in range(partitions.AHEAD_MONTHS + 1)} <= ready

        # The record path works on the new table: a retry (a month later) gets the old row, a
        # new call is recorded and counted.
        retry = new_call("CA2", "a", _candidate(agent_id, config_hash), remember=False)._replace(
            call_id="call_retry",
            started_at=NOW + timedelta(days=40),
        )
        fresh = new_call("CA-new", "a", _candidate(agent_id, config_hash), remember=False)
        got_retry, got_new = await calls.record_calls(pool, [retry, fresh])
        assert isinstance(got_retry, CallRecord) and got_retry.call_id == "call_2"
        assert isinstance(got_new, CallRecord) and got_new.call_id == fresh.call_id
        assert await pool.fetchval("SELECT count(*) FROM calls") == len(before) + 1
        added = await pool.fetchval("SELECT sum(calls) FROM call_rollups_all")
        assert added == sum(r[6] for r in rollups_before) + 1
        # Lookups by call id reach the old rows, the far-back one too.
        assert (await calls.get_call(pool, "call_1")).started_at.year == 2019
    finally:
        await pool.close()


async def test_a_retry_in_another_month_is_recorded_once_even_at_once(database: str) -> None:
    await migrate(database)
    pool = await create_pool(database)
    try:
        agent_id, config_hash = await _served(pool)
        offered = _candidate(agent_id, config_hash)
        first = new_call("CA1", "a", offered, remember=False, started_at=NOW)
        retries = [
            first._replace(call_id=f"call_retry{n}", started_at=NOW + timedelta(days=31 * n))
            for n in range(1, 4)
        ]
        results = await asyncio.gather(*(calls.record_calls(pool, [c]) for c in (first, *retries)))

        ids = {r.call_id for (r,) in results if isinstance(r, CallRecord)}
        assert len(ids) == 1 and len(results) == 4
        assert await pool.fetchval("SELECT count(*) FROM calls") == 1
        assert await pool.fetchval("SELECT count(*) FROM call_keys") == 1
        # Endings and statuses find the row through its key, whichever month it is in.
        end = calls.CallEnd("twilio", "CA1", "completed", NOW + timedelta(minutes=2), 120.0)
        assert (await calls.end_calls(pool, [end]))[0] is not None
        assert (await calls.get_call(pool, ids.pop())).duration_s == 120.0
    finally:
        await pool.close()


async def test_calls_in_the_default_partition_move_into_their_month(database: str) -> None:
    await migrate(database)
    pool = await create_pool(database)
    try:
        agent_id, config_hash = await _served(pool)
        offered = _candidate(agent_id, config_hash)
        far = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
        recorded = await calls.record_calls(
            pool,
            [
                new_call(
                    f"CA{n}", "a", offered, remember=False, started_at=far + timedelta(hours=n)
                )
                for n in range(3)
            ],
        )
        assert await pool.fetchval("SELECT count(*) FROM ONLY calls_default") == 3
        rollups_before = [tuple(r) for r in await pool.fetch(ROLLUPS)]

        done = await partitions.maintain(pool, retention_days=None)

        assert done == partitions.Maintenance(created=1, dropped=[])
        assert await pool.fetchval("SELECT count(*) FROM ONLY calls_default") == 0
        placed = {r["partition"]: r["count"] for r in await pool.fetch(WHERE_EACH_CALL_IS)}
        assert placed == {"calls_p203105": 3}
        assert [tuple(r) for r in await pool.fetch(ROLLUPS)] == rollups_before
        for call in recorded:
            assert isinstance(call, CallRecord)
            assert (await calls.get_call(pool, call.call_id)).started_at == call.started_at
        # Nothing more to do on the next run.
        assert await partitions.maintain(pool, None) == partitions.Maintenance(0, [])
    finally:
        await pool.close()


async def test_retention_drops_whole_expired_months_and_their_keys(database: str) -> None:
    await migrate(database)
    pool = await create_pool(database)
    try:
        agent_id, config_hash = await _served(pool)
        offered = _candidate(agent_id, config_hash)
        this_month = NOW.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        old, older = this_month - timedelta(days=20), this_month - timedelta(days=50)
        await calls.record_calls(
            pool,
            [
                new_call("CA-old", "a", offered, remember=False, started_at=old),
                new_call("CA-older", "a", offered, remember=False, started_at=older),
                new_call("CA-now", "a", offered, remember=False, started_at=NOW),
            ],
        )
        await partitions.maintain(pool, None)  # the two past months' partitions
        rollups_before = [tuple(r) for r in await pool.fetch(ROLLUPS)]
        # Days since the end of last month: it is expired, and this month is not.
        days = (NOW - this_month).days

        done = await partitions.maintain(pool, retention_days=days)

        assert [m.strftime("%Y%m") for m in done.dropped] == [
            older.strftime("%Y%m"),
            old.strftime("%Y%m"),
        ]
        left = await pool.fetch("SELECT provider_call_id FROM calls")
        assert [r[0] for r in left] == ["CA-now"]
        assert [r[0] for r in await pool.fetch("SELECT provider_call_id FROM call_keys")] == [
            "CA-now"
        ]
        assert [tuple(r) for r in await pool.fetch(ROLLUPS)] == rollups_before
        names = {r[0] for r in await pool.fetch("SELECT name FROM call_partitions")}
        assert month_of(old) not in names and month_of(NOW) in names
    finally:
        await pool.close()


async def test_retention_keeps_a_month_until_the_rollups_count_its_calls(database: str) -> None:
    """A call replayed into an expired month while no compaction can run (another holds its
    lock) is pending: the month stays, with its keys, until a compaction has folded it."""
    await migrate(database)
    pool = await create_pool(database)
    try:
        agent_id, config_hash = await _served(pool)
        this_month = NOW.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        old = this_month - timedelta(days=20)
        late = new_call("CA-late", "a", _candidate(agent_id, config_hash), remember=False)
        await calls.record_calls(pool, [late._replace(started_at=old)])
        await partitions.maintain(pool, None)
        days = (NOW - this_month).days
        async with pool.acquire() as compacting:
            await compacting.execute(rollups.LOCK)
            kept = await partitions.maintain(pool, retention_days=days)
            await compacting.execute(rollups.UNLOCK)
        assert kept.dropped == []
        assert await pool.fetchval("SELECT count(*) FROM call_keys") == 1
        assert await pool.fetchval("SELECT sum(calls) FROM call_rollups_all") == 1

        done = await partitions.maintain(pool, retention_days=days)

        assert [month_of(m) for m in done.dropped] == [month_of(old)]
        assert await pool.fetchval("SELECT count(*) FROM calls") == 0
        assert await pool.fetchval("SELECT count(*) FROM call_keys") == 0
        assert await pool.fetchval("SELECT sum(calls) FROM call_rollups") == 1
    finally:
        await pool.close()


async def test_a_compaction_meeting_pending_calls_moved_into_their_month_folds_them(
    database: str,
) -> None:
    """A compaction whose session plans its first read of the pending calls while a call's
    month is being created takes the partitions as they were before; the rows the creation
    moves out of the default partition would then be seen nowhere, and the horizon would pass
    them unfolded. The creation holds the compaction off instead."""
    await migrate(database)
    pool = await create_pool(database)
    mover = await asyncpg.connect(database)
    compactor = await asyncpg.connect(database)  # a new session: nothing planned yet
    try:
        agent_id, config_hash = await _served(pool)
        far = NOW + timedelta(days=400)  # past the months kept ahead: the default partition
        call = new_call("CA-far", "a", _candidate(agent_id, config_hash), remember=False)
        await calls.record_calls(pool, [call._replace(started_at=far)])
        month = await pool.fetchval("SELECT call_month($1)", far)
        async with mover.transaction():
            assert await mover.fetchval("SELECT create_call_partition($1)", month)
            compaction = asyncio.create_task(compactor.fetchval(rollups.COMPACT))
            waiting = "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1"
            backend = compactor.get_server_pid()
            await eventually(
                lambda: pool.fetchval(waiting, backend), lambda w: w or compaction.done()
            )
        await compaction
        await rollups.compact(pool)

        assert await pool.fetchval("SELECT count(*) FROM call_rollups_pending(NULL, NULL)") == 0
        assert await pool.fetchval("SELECT sum(calls) FROM call_rollups") == 1
        placed = await pool.fetchval("SELECT tableoid::regclass::text FROM calls")
        assert placed == month_of(far)
    finally:
        await compactor.close()
        await mover.close()
        await pool.close()


async def test_maintenance_is_one_session_at_a_time(database: str) -> None:
    await migrate(database)
    pool = await create_pool(database)
    try:
        await pool.execute("DROP TABLE " + month_of(NOW, partitions.AHEAD_MONTHS))
        runs = await asyncio.gather(*(partitions.maintain(pool, None) for _ in range(4)))
        assert sorted(r.created for r in runs) == [0, 0, 0, 1]
    finally:
        await pool.close()


async def test_endings_that_waited_too_long_for_their_calls_expire(database: str) -> None:
    await migrate(database)
    pool = await create_pool(database)
    try:
        # Received the wait ago, and an hour later, by the database's clock.
        await pool.executemany(
            "INSERT INTO call_endings (provider, provider_call_id, status, ended_at, received_at)"
            " SELECT 'twilio', $1, 'completed', t, t"
            " FROM (SELECT now() - make_interval(days => $2, hours => $3) AS t) w",
            [
                ("CA-waited", partitions.ENDING_WAIT_DAYS, 0),
                ("CA-waiting", partitions.ENDING_WAIT_DAYS, -1),
            ],
        )

        done = await partitions.maintain(pool, None)

        assert (done.endings_settled, done.endings_expired) == (0, 1)
        left = await pool.fetch("SELECT provider_call_id FROM call_endings")
        assert [r[0] for r in left] == ["CA-waiting"]
    finally:
        await pool.close()

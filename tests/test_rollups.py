"""The rollups (migration 0007) against an exact scan of the same calls: every call goes through
the store's real write paths, with provider retries, spool replays (a batch recorded twice),
early and redelivered endings, progress statuses and re-posted analyses; counts and rates must
be equal, percentiles within the stated error, before and after compaction and backfill."""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from admin.app import create_app
from loadtests.record_cost import HOT_UPDATES
from store import analytics, rollups
from store.calls import (
    CallEnd,
    CallRef,
    Candidate,
    NewCall,
    end_calls,
    record_calls,
    set_status,
)
from store.calls_analysis import record_analysis
from store.settings import Settings
from tests.call_rows import new_call
from tests.conftest import AgentFactory, Api, variant
from tests.polling import eventually
from tests.router_fixtures import CHANNEL, pin

# The reference: what the analytics computed from the calls before rollups.
EXACT = """
SELECT version, draft_revision,
       count(*) AS calls,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(duration_s) AS durations,
       avg(duration_s) AS duration_mean,
       var_samp(duration_s) AS duration_var,
       count(sentiment) AS sentiments,
       count(*) FILTER (WHERE sentiment = 'positive') AS positive,
       count(*) FILTER (WHERE sentiment = 'neutral') AS neutral,
       count(*) FILTER (WHERE sentiment = 'negative') AS negative,
       count(automated) AS analysed,
       count(*) FILTER (WHERE automated) AS automated,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_s) AS duration_p50,
       percentile_cont(0.9) WITHIN GROUP (ORDER BY duration_s) AS duration_p90
FROM calls
WHERE agent_id = $1 AND started_at >= $2 AND started_at < $3
GROUP BY 1, 2
ORDER BY version NULLS LAST, draft_revision
"""
COUNTS = (
    *("calls", "completed", "durations", "sentiments", "positive", "neutral", "negative"),
    *("analysed", "automated"),
)
START = datetime(2026, 3, 1, 10, tzinfo=UTC)
EVERYTHING = (analytics.EARLIEST, analytics.LATEST)


def close_percentile(found: float | None, exact: float | None) -> bool:
    """Within the stated bound: RELATIVE_ERROR from 1 s, ZERO_BUCKET_ERROR_S below."""
    if found is None or exact is None:
        return found is exact
    bound = max(rollups.RELATIVE_ERROR * exact, rollups.ZERO_BUCKET_ERROR_S)
    return abs(found - exact) <= bound * (1 + 1e-12)


async def assert_exact(pool: asyncpg.Pool, agent_id: str, since: datetime, until: datetime) -> None:
    """The rollups' outcomes per version and draft revision equal the scan's over the same
    whole hours."""
    start, end = rollups.hour_window(since, until)
    expected = await pool.fetch(EXACT, agent_id, start, end)
    found = await analytics.version_outcomes(pool, agent_id, since, until, split_draft=True)
    assert [(g.version, g.draft_revision) for g in found] == [
        (r["version"], r["draft_revision"]) for r in expected
    ]
    for group, row in zip(found, expected, strict=True):
        o = group.outcomes
        assert {k: getattr(o, k) for k in COUNTS} == {k: row[k] for k in COUNTS}
        assert o.automation_rate == (
            row["automated"] / row["analysed"] if row["analysed"] else None
        )
        assert o.duration_mean == pytest.approx(row["duration_mean"], rel=1e-12)
        assert o.duration_var == pytest.approx(row["duration_var"], rel=1e-9)
        assert close_percentile(o.duration_p50, row["duration_p50"]), (o, row)
        assert close_percentile(o.duration_p90, row["duration_p90"]), (o, row)


@pytest.fixture
async def arms(api: Api, make_agent: AgentFactory) -> tuple[Candidate, ...]:
    """The test channel split between version 1 (a), version 2 (b) and the draft (c)."""
    agent = await make_agent(versions=2)
    found = []
    for label, version in (("a", 1), ("b", 2)):
        v = await api.ok("GET", f"/v1/agents/{agent['id']}/versions/{version}")
        found.append(Candidate(label, agent["id"], version, None, v["config_hash"]))
    draft = await api.ok("GET", f"/v1/agents/{agent['id']}/draft")
    found.append(Candidate("c", agent["id"], None, draft["revision"], draft["config_hash"]))
    variants = [variant(agent, "a", 1, 40), variant(agent, "b", 2, 40)]
    await pin(api, {"variants": [*variants, variant(agent, "c", None, 20)], "sticky": "call"})
    return tuple(found)


def spread_calls(
    rng: random.Random, arms: tuple[Candidate, ...], prefix: str, n: int, minutes: float
) -> list[NewCall]:
    """`n` calls served the arms at random, started over `minutes` from START."""
    return [
        new_call(
            f"{prefix}-{i}",
            rng.choice("abc"),
            arms,
            remember=False,
            started_at=START + timedelta(minutes=rng.uniform(0, minutes)),
        )
        for i in range(n)
    ]


async def lifecycle(pool: asyncpg.Pool, arms: tuple[Candidate, ...], n: int, seed: int) -> None:
    """`n` calls over six hours through every write path, with the faults that must not count
    twice."""
    rng = random.Random(seed)
    calls = spread_calls(rng, arms, f"CA{seed}", n, 360)
    # An ending that arrives before its call, applied as the call is recorded.
    early = calls[0]
    ending = CallEnd("twilio", early.provider_call_id, "completed", START + timedelta(hours=7), 42)
    assert await end_calls(pool, [ending]) == [None]
    for batch in (calls[: n // 2], calls[n // 2 :]):
        await record_calls(pool, batch)
    await record_calls(pool, calls[: n // 3])  # a spool replay of calls already recorded
    await record_calls(pool, [calls[1], calls[1]])  # a provider retry, twice in one batch
    endings = []
    for call in calls[1:]:
        await set_status(pool, "twilio", call.provider_call_id, "in-progress")
        if rng.random() < 0.1:
            continue  # still in progress
        duration = rng.choice([0.0, 0.4, rng.lognormvariate(4.5, 1.0)])
        status = "completed" if rng.random() < 0.9 else "failed"
        end = CallEnd("twilio", call.provider_call_id, status, START + timedelta(hours=8), duration)
        endings += [end, end] if rng.random() < 0.3 else [end]  # a redelivered status callback
    # As the router group-commits them: a statement a batch of endings, redeliveries and all,
    # then each redelivered again on its own.
    for start in range(0, len(endings), 7):
        await end_calls(pool, endings[start : start + 7])
    for end in endings[::5]:
        await end_calls(pool, [end])
    for call in calls[1:]:
        await set_status(pool, "twilio", call.provider_call_id, "ringing")  # late, ignored
    for call in calls:
        if rng.random() < 0.2:
            continue  # never analysed
        for _ in range(rng.choice([1, 1, 2, 3])):  # re-posted analyses replace each other
            body = {
                "sentiment": rng.choice(["positive", "neutral", "negative"]),
                "automated": rng.random() < 0.6,
            }
            await record_analysis(pool, CallRef.parse(call.call_id), body, "test")


async def test_rollups_equal_an_exact_scan(pool: asyncpg.Pool, arms: tuple[Candidate, ...]) -> None:
    agent_id = arms[0].agent_id
    await lifecycle(pool, arms, 120, seed=1)
    windows = [EVERYTHING, (START + timedelta(minutes=70), START + timedelta(minutes=200))]
    for since, until in windows:
        await assert_exact(pool, agent_id, since, until)  # deltas only
    assert await rollups.compact(pool) > 0
    assert await pool.fetchval("SELECT count(*) FROM call_rollup_deltas") == 0
    for since, until in windows:
        await assert_exact(pool, agent_id, since, until)
    await lifecycle(pool, arms, 40, seed=2)  # compacted rows and new deltas together
    for since, until in windows:
        await assert_exact(pool, agent_id, since, until)


TOTAL_CALLS = "SELECT sum(calls) FROM call_rollups_all"
EXACT_BY_VARIANT = """
SELECT variant, count(*) AS calls, count(automated) AS analysed,
       count(*) FILTER (WHERE automated) AS automated, count(duration_s) AS durations,
       avg(duration_s) AS duration_mean
FROM calls
WHERE channel = $1 AND started_at >= $2 AND started_at < $3
GROUP BY variant
ORDER BY variant
"""


async def test_per_variant_outcomes_are_exact_for_any_window(
    pool: asyncpg.Pool, arms: tuple[Candidate, ...]
) -> None:
    """A rollout's step starts at any second: its outcomes are the rollups of the window's whole
    hours plus its partial hours read from the calls, equal to a scan of exactly the window."""
    await lifecycle(pool, arms, 120, seed=3)
    await rollups.compact(pool)
    await lifecycle(pool, arms, 30, seed=4)  # compacted rows and pending deltas together
    minutes = [0, 7, 59, 60, 61, 130.5, 200, 359.9]
    for since_m, until_m in itertools.combinations(minutes, 2):
        since, until = START + timedelta(minutes=since_m), START + timedelta(minutes=until_m)
        found = await analytics.variant_outcomes(pool, CHANNEL, since, until)
        expected = await pool.fetch(EXACT_BY_VARIANT, CHANNEL, since, until)
        assert expected or until_m - since_m < 10, (since, until)  # the windows hold calls
        assert [g.variant for g in found] == [r["variant"] for r in expected], (since, until)
        for group, row in zip(found, expected, strict=True):
            o = group.outcomes
            assert (o.calls, o.analysed, o.automated, o.durations) == (
                row["calls"],
                row["analysed"],
                row["automated"],
                row["durations"],
            ), (since, until)
            assert o.duration_mean == pytest.approx(row["duration_mean"], rel=1e-12)


async def test_backfill_rebuilds_the_same_rollups_idempotently(
    pool: asyncpg.Pool, database_url: str, arms: tuple[Candidate, ...]
) -> None:
    agent_id = arms[0].agent_id
    await lifecycle(pool, arms, 60, seed=3)
    await rollups.compact(pool)
    await lifecycle(pool, arms, 20, seed=4)  # calls and deltas not compacted yet
    built = await pool.fetch("SELECT * FROM call_rollups_all")
    # As if the calls had been recorded before migration 0007: no rollups at all.
    await pool.execute("DELETE FROM call_rollups; DELETE FROM call_rollup_deltas")
    hours = await pool.fetchval(
        "SELECT count(DISTINCT date_trunc('hour', started_at, 'UTC')) FROM calls"
    )
    assert await rollups.backfill(database_url) == hours == 6  # 10:00 to 15:00
    await assert_exact(pool, agent_id, *EVERYTHING)
    rebuilt = await pool.fetch("SELECT * FROM call_rollups ORDER BY agent_id, hour, variant")
    assert await rollups.backfill(database_url) == hours
    again = await pool.fetch("SELECT * FROM call_rollups ORDER BY agent_id, hour, variant")
    assert rebuilt == again
    # The calls not compacted yet are left pending, to the compaction.
    assert sum(r["calls"] for r in rebuilt) == 60
    assert sum(r["calls"] for r in built) == await pool.fetchval(TOTAL_CALLS) == 80
    assert await rollups.compact(pool) == 20
    assert await pool.fetchval("SELECT sum(calls) FROM call_rollups") == 80
    # Over rollups that already held everything, nothing is counted twice.
    await lifecycle(pool, arms, 10, seed=5)
    await rollups.backfill(database_url)
    await assert_exact(pool, agent_id, *EVERYTHING)


async def test_concurrent_writes_compactions_and_backfill_stay_exact(
    pool: asyncpg.Pool, database_url: str, arms: tuple[Candidate, ...]
) -> None:
    """Several batches, endings and analyses at once, while compaction and a backfill run."""

    async def compact_often() -> None:
        for _ in range(20):
            await rollups.compact(pool)
            await asyncio.sleep(0.01)

    writers: list[Any] = [lifecycle(pool, arms, 30, seed=10 + i) for i in range(4)]
    await asyncio.gather(*writers, compact_often(), compact_often(), rollups.backfill(database_url))
    await assert_exact(pool, arms[0].agent_id, *EVERYTHING)
    await rollups.compact(pool)
    await assert_exact(pool, arms[0].agent_id, *EVERYTHING)


def test_percentiles_from_a_histogram() -> None:
    """Interpolated like percentile_cont between the order statistics' representatives."""
    counts = [0] * rollups.BUCKETS
    counts[0], counts[10] = 1, 3
    rep = rollups.representative(10)
    assert rollups.percentiles(counts, [0.0, 0.5, 1.0]) == [0.5, rep, rep]
    assert rollups.percentiles(counts, [0.2]) == pytest.approx([0.5 + 0.6 * (rep - 0.5)])
    assert rollups.percentiles([0] * rollups.BUCKETS, [0.5]) is None
    with pytest.raises(ValueError):
        rollups.histogram(10 ** (10 * rollups.BUCKETS))


async def test_bucket_representatives_bound_every_duration(pool: asyncpg.Pool) -> None:
    """The SQL bucket of a duration and the Python representative agree within the bound."""
    durations = [0.0, 0.3, 0.999, 1.0, 1.5, 59.9, 60.0, 61.0, 3599.0, 86_000.0]
    rows = await pool.fetch(
        "SELECT d, rollup_duration_bucket(d) AS b FROM unnest($1::float8[]) d", durations
    )
    for row in rows:
        assert close_percentile(rollups.representative(row["b"]), row["d"]), dict(row)
    assert await pool.fetchval("SELECT rollup_duration_bucket(1e9)") == rollups.BUCKETS - 1


async def test_updates_racing_the_compaction_count_once(
    pool: asyncpg.Pool, arms: tuple[Candidate, ...]
) -> None:
    """Endings and analyses of calls the compaction is folding at that moment: each update
    counts in the delta it writes or in the call's state the compaction folds, never both and
    never neither (migration 0015's horizon, read FOR SHARE and moved FOR UPDATE)."""
    rng = random.Random(7)
    stop = asyncio.Event()

    async def compact_continuously() -> None:
        while not stop.is_set():
            await rollups.compact(pool)

    async def end_and_analyse(calls: list[NewCall]) -> None:
        for call in calls:
            end = CallEnd("twilio", call.provider_call_id, "completed", START, rng.uniform(1, 500))
            await end_calls(pool, [end])
            body = {"sentiment": "positive", "automated": rng.random() < 0.5}
            await record_analysis(pool, CallRef.parse(call.call_id), body, "test")

    compactor = asyncio.create_task(compact_continuously())
    try:
        for round_ in range(6):
            calls = spread_calls(rng, arms, f"CA-race-{round_}", 40, 120)
            await record_calls(pool, calls)
            await asyncio.gather(*(end_and_analyse(calls[k::4]) for k in range(4)))
    finally:
        stop.set()
        await compactor
    await assert_exact(pool, arms[0].agent_id, *EVERYTHING)
    await rollups.compact(pool)
    assert await pool.fetchval("SELECT count(*) FROM call_rollup_deltas") == 0
    await assert_exact(pool, arms[0].agent_id, *EVERYTHING)


async def test_the_compaction_updates_the_rollups_in_place(
    pool: asyncpg.Pool, arms: tuple[Candidate, ...]
) -> None:
    """Folding calls into rollup rows that exist updates every row on its own page (a HOT
    update: no new index entries), however full the pages are of rows (migration 0016)."""
    calls = spread_calls(random.Random(13), arms, "CA-hot", 300, 300 * 60)
    await record_calls(pool, calls)
    await rollups.compact(pool)
    again = [
        c._replace(call_id=c.call_id + "-2", provider_call_id=c.provider_call_id + "-2")
        for c in calls
    ]
    await record_calls(pool, again)
    groups = {(c.drawn, rollups.floor_hour(c.started_at)) for c in calls}
    async with pool.acquire() as conn, conn.transaction():
        before = await conn.fetchrow(HOT_UPDATES)
        assert await conn.fetchval("SELECT compact_call_rollups()") == len(again)
        after = await conn.fetchrow(HOT_UPDATES)
    assert [a - b for a, b in zip(after, before, strict=True)] == [len(groups), len(groups)]
    assert await pool.fetchval("SELECT count(*) FROM call_rollups") == len(groups)


async def test_a_read_aggregates_the_pending_calls_of_its_agent_or_channel(
    pool: asyncpg.Pool, arms: tuple[Candidate, ...]
) -> None:
    await record_calls(pool, spread_calls(random.Random(9), arms, "CA-pending", 12, 60))
    pending = "SELECT coalesce(sum(calls), 0) FROM call_rollups_pending($1::text, $2::text)"
    assert await pool.fetchval(pending, None, None) == 12
    assert await pool.fetchval(pending, None, CHANNEL) == 12
    assert await pool.fetchval(pending, arms[0].agent_id, CHANNEL) == 12
    assert await pool.fetchval(pending, None, "+14155550199") == 0
    assert await pool.fetchval(pending, "agt_other", None) == 0
    assert await rollups.compact(pool) == 12
    assert await pool.fetchval(pending, None, None) == 0
    assert await pool.fetchval("SELECT sum(calls) FROM call_rollups_folded") == 12


async def test_the_admin_service_folds_the_recorded_calls_and_counts_them(
    settings: Settings, pool: asyncpg.Pool, arms: tuple[Candidate, ...]
) -> None:
    """An admin app's own compactor (every AGENTVER_ROLLUP_COMPACT_S) leaves nothing pending,
    counts what it folded in agentver_rollup_folded_total and times every run in
    agentver_rollup_compaction_seconds."""
    await record_calls(pool, spread_calls(random.Random(11), arms, "CA-admin", 12, 60))
    app = create_app(replace(settings, rollup_compact_s=0.05))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()

    async def samples() -> dict[str, float]:
        text = await (await client.get("/metrics")).text()
        return {
            s.name: s.value
            for f in text_string_to_metric_families(text)
            if f.name in ("agentver_rollup_folded", "agentver_rollup_compaction_seconds")
            for s in f.samples
            if not s.labels
        }

    try:
        found = await eventually(
            samples, lambda m: m["agentver_rollup_folded_total"] >= 12, within_s=5
        )
    finally:
        await client.close()
    assert found["agentver_rollup_folded_total"] == 12
    # One observation a run, the one that folded the calls included; each well under a second.
    runs, seconds = (found[f"agentver_rollup_compaction_seconds_{s}"] for s in ("count", "sum"))
    assert runs >= 1 and 0 < seconds < runs
    assert await pool.fetchval("SELECT count(*) FROM call_rollups_pending(NULL, NULL)") == 0
    assert await pool.fetchval("SELECT sum(calls) FROM call_rollups") == 12

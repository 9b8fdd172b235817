"""Analytics over growing numbers of calls: seeds a scratch database, times the per-version and
A/B reports over HTTP at each size in one run, prints JSON, drops the database.

    python -m loadtests.analytics_bench [--calls 1000000 10000000] [--others 20000000] [--runs 20]

First `--others` calls of four other agents (the table grows, their rollups are not read), then
the measured agent's calls up to each size in turn. Calls are seeded with no trigger running, as
calls recorded before the rollups existed, then `store.rollups.backfill` builds the rollups,
timed as `backfill_s`.

DATABASE_URL names the server (default: the local one); the scratch database is created on it
and dropped afterwards, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from admin.app import create_app
from harness.postgres import scratch_database
from store import agents, rollups
from store.db import create_pool
from store.settings import DEFAULT_DATABASE_URL, Settings
from store.tokens import create_token

VERSIONS = 5
WARMUP_RUNS = 6
CHANNEL_A, CHANNEL_B = "+14155550100", "+14155550101"
DAYS = 30
# A spread of calls like production's: five versions and the draft, two channels with two
# variants each, 95% completed, durations up to ten minutes, three in four calls analysed.
# Each call's key (migration 0011) goes in with it, from the rows just written.
SEED_CALLS = """
WITH seeded AS (
INSERT INTO calls (call_id, provider, provider_call_id, channel, from_number, agent_id, version,
                   draft_revision, config_hash, variant, routing_revision, status, started_at,
                   ended_at, duration_s, sentiment, automated, recorded_xid)
SELECT 'bench-' || g, 'bench', 'bench-' || g,
       CASE WHEN g % 2 = 0 THEN $3 ELSE $4 END,
       '+1415' || lpad((g % 10000000)::text, 7, '0'),
       $1, s.version, CASE WHEN s.version IS NULL THEN 1 + (s.r * 1000)::int % 3 END, $2,
       CASE WHEN g % 4 < 2 THEN 'control' ELSE 'treatment' END, 1,
       CASE WHEN s.r < 0.95 THEN 'completed' ELSE 'failed' END,
       s.started, s.started + make_interval(secs => s.duration), s.duration,
       CASE WHEN s.r < 0.75
            THEN (ARRAY['positive', 'neutral', 'negative'])[1 + (s.r * 4000)::int % 3] END,
       CASE WHEN s.r < 0.75 THEN random() < 0.5 + coalesce(s.version, 6) * 0.02 END, '0'
FROM generate_series($9::bigint, $5) AS g,
     LATERAL (SELECT NULLIF(g % ($6 + 1), 0) AS version, random() AS r,
                     round((random() * 600)::numeric, 1)::float8 AS duration,
                     $7::timestamptz - make_interval(secs => random() * $8 * 86400) AS started
             ) AS s
RETURNING provider, provider_call_id, call_id, started_at
)
INSERT INTO call_keys (provider, provider_call_id, call_id, started_at) SELECT * FROM seeded
"""
MINIMAL_CONFIG = {
    "name": "Bench bot",
    "system_prompt": "You are a benchmark.",
    "llm": {"provider": "openai", "model": "gpt-4o-mini"},
    "voice": {"tts_provider": "elevenlabs", "tts_voice": "rachel"},
}


def _with_prompt(prompt: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda config: {**config, "system_prompt": prompt}


# Seeding skips every trigger (the foreign keys' checks of rows that refer to one agent and one
# config by construction) and writes the calls as recorded before the rollups existed (by
# transaction 0, below the horizon: migration 0015), so that neither the compaction nor the
# reads count them: the rollups are built by the backfill afterwards.
NO_TRIGGERS = "SET session_replication_role = replica"
# Other agents' calls are numbered from here, clear of the measured agent's.
OTHERS_FIRST_CALL = 1_000_000_000
OTHER_AGENTS = 4


async def _new_agent(pool: asyncpg.Pool) -> tuple[str, str]:
    agent = await agents.create_agent(pool, MINIMAL_CONFIG, "bench")
    for n in range(1, VERSIONS + 1):
        await agents.update_draft(pool, agent.id, _with_prompt(f"Prompt {n}."), "bench")
        await agents.publish(pool, agent.id, f"v{n}", "", "bench")
    return agent.id, (await agents.get_agent(pool, agent.id)).draft.config_hash


async def _insert(
    pool: asyncpg.Pool, agent: tuple[str, str], channels: tuple[str, str], first: int, last: int
) -> None:
    """Calls numbered first..last for `agent` on `channels`, with their keys, no trigger run."""
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        await conn.execute(NO_TRIGGERS)
        try:
            await conn.execute(SEED_CALLS, *agent, *channels, last, VERSIONS, now, DAYS, first)
        finally:
            await conn.execute("RESET session_replication_role")


async def _seed_others(pool: asyncpg.Pool, calls: int) -> None:
    """`calls` more calls spread over OTHER_AGENTS agents on channels of their own: the table
    analytics must not scan grows, the measured agent's rollups do not."""
    per_agent = calls // OTHER_AGENTS
    for n in range(OTHER_AGENTS):
        first = OTHERS_FIRST_CALL + n * per_agent + 1
        channels = (f"+1646555{n:04d}", f"+1646556{n:04d}")
        await _insert(pool, await _new_agent(pool), channels, first, first + per_agent - 1)


async def _seed(
    pool: asyncpg.Pool, url: str, agent: tuple[str, str], first: int, last: int
) -> float:
    """Calls numbered first..last for `agent`, then the rollups; the backfill's seconds."""
    await _insert(pool, agent, (CHANNEL_A, CHANNEL_B), first, last)
    started = time.perf_counter()
    await rollups.backfill(url)
    backfill_s = time.perf_counter() - started
    # Fresh statistics and a visibility map, as autovacuum keeps them in production.
    await pool.execute("VACUUM ANALYZE calls")
    await pool.execute("VACUUM ANALYZE call_rollups")
    return backfill_s


async def _time(runs: int, work: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    # Warm up as on a running service: the buffer cache, and the plan cache past the point
    # where Postgres may switch a prepared statement to a generic plan (after five custom
    # plans; the pool hands the same connection back each time). Timing from the first run
    # once let a 2-3x slower generic plan hide above the median.
    for _ in range(WARMUP_RUNS):
        await work()
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        await work()
        timings.append((time.perf_counter() - start) * 1000)
    timings.sort()
    p99 = timings[min(len(timings) - 1, math.ceil(0.99 * len(timings)) - 1)]
    return {"p50_ms": round(statistics.median(timings), 1), "p99_ms": round(p99, 1)}


async def _measure(
    pool: asyncpg.Pool, client: TestClient[Any, Any], token: str, agent_id: str, runs: int
) -> dict[str, Any]:
    until = datetime.now(UTC) + timedelta(minutes=1)
    since = until - timedelta(days=DAYS + 1)
    window = {"since": since.isoformat(), "until": until.isoformat()}
    headers = {"Authorization": f"Bearer {token}"}
    sample: dict[str, Any] = {}

    async def get(path: str, params: dict[str, str]) -> None:
        resp = await client.get(path, params=params, headers=headers)
        assert resp.status == 200, await resp.text()
        sample[path] = await resp.json()

    versions = await _time(
        runs, lambda: get("/v1/analytics/versions", {"agent_id": agent_id, **window})
    )
    ab = await _time(runs, lambda: get("/v1/analytics/ab", {"channel": CHANNEL_A, **window}))
    rows = await pool.fetchval("SELECT count(*) FROM call_rollups WHERE agent_id = $1", agent_id)
    return {
        # Other work on the machine skews the timings: the 1, 5, 15-minute load averages.
        "load_avg": [round(load, 2) for load in os.getloadavg()],
        "http_versions": versions,
        "http_ab": ab,
        "rollup_rows": rows,
        "sample_row": sample["/v1/analytics/versions"]["items"][-1],
    }


async def main(sizes: list[int], others: int, runs: int) -> dict[str, Any]:
    server = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    async with scratch_database(server, "bench") as url:
        pool = await create_pool(url)
        client: TestClient[Any, Any] = TestClient(
            TestServer(create_app(Settings(database_url=url)))
        )
        try:
            agent = await _new_agent(pool)
            token = await create_token(pool, "bench", "viewer")
            await client.start_server()
            started = time.perf_counter()
            await _seed_others(pool, others)
            others_s = round(time.perf_counter() - started, 1)
            results, seeded = [], 0
            for size in sorted(sizes):
                started = time.perf_counter()
                backfill_s = await _seed(pool, url, agent, seeded + 1, size)
                seeded = size
                measured = await _measure(pool, client, token, agent[0], runs)
                seed_s = round(time.perf_counter() - started, 1)
                results.append(
                    {"calls": size, "seed_s": seed_s, "backfill_s": round(backfill_s, 1)} | measured
                )
        finally:
            await client.close()
            await pool.close()
    first, last = results[0], results[-1]
    ratio = {
        key: round(last[key]["p50_ms"] / first[key]["p50_ms"], 2)
        for key in ("http_versions", "http_ab")
    }
    return {
        "runs": runs,
        "days": DAYS,
        "other_agents_calls": others,
        "other_agents_seed_s": others_s,
        "sizes": results,
        "p50_ratio_largest_to_smallest": ratio,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument(
        "--others", type=int, default=20_000_000, help="calls of other agents, seeded first"
    )
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.calls, args.others, args.runs)), indent=2))

"""Analytics over a million calls: seeds a scratch database, times the per-version and A/B
queries in the store and over HTTP, prints JSON, drops the database.

    python -m loadtests.analytics_bench [--calls 1000000] [--runs 7]

DATABASE_URL names the server (default: the local one); the scratch database is created on it
and dropped afterwards, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from store import agents, analytics
from store.db import create_pool
from store.settings import DEFAULT_DATABASE_URL, Settings
from store.tokens import create_token

VERSIONS = 5
WARMUP_RUNS = 6
CHANNEL_A, CHANNEL_B = "+14155550100", "+14155550101"
DAYS = 30
# A spread of calls like production's: five versions and the draft, two channels with two
# variants each, 95% completed, durations up to ten minutes, three in four calls analysed.
SEED_CALLS = """
INSERT INTO calls (call_id, provider, provider_call_id, channel, from_number, agent_id, version,
                   draft_revision, config_hash, variant, routing_revision, status, started_at,
                   ended_at, duration_s, sentiment, automated)
SELECT 'bench-' || g, 'bench', 'bench-' || g,
       CASE WHEN g % 2 = 0 THEN $3 ELSE $4 END,
       '+1415' || lpad((g % 10000000)::text, 7, '0'),
       $1, s.version, CASE WHEN s.version IS NULL THEN 1 + (s.r * 1000)::int % 3 END, $2,
       CASE WHEN g % 4 < 2 THEN 'control' ELSE 'treatment' END, 1,
       CASE WHEN s.r < 0.95 THEN 'completed' ELSE 'failed' END,
       s.started, s.started + make_interval(secs => s.duration), s.duration,
       CASE WHEN s.r < 0.75
            THEN (ARRAY['positive', 'neutral', 'negative'])[1 + (s.r * 4000)::int % 3] END,
       CASE WHEN s.r < 0.75 THEN random() < 0.5 + coalesce(s.version, 6) * 0.02 END
FROM generate_series(1, $5) AS g,
     LATERAL (SELECT NULLIF(g % ($6 + 1), 0) AS version, random() AS r,
                     round((random() * 600)::numeric, 1)::float8 AS duration,
                     $7::timestamptz - make_interval(secs => random() * $8 * 86400) AS started
             ) AS s
"""
# Every call has its key (migration 0011).
SEED_KEYS = """
INSERT INTO call_keys (provider, provider_call_id, call_id, started_at)
SELECT provider, provider_call_id, call_id, started_at FROM calls WHERE provider = 'bench'
"""
MINIMAL_CONFIG = {
    "name": "Bench bot",
    "system_prompt": "You are a benchmark.",
    "llm": {"provider": "openai", "model": "gpt-4o-mini"},
    "voice": {"tts_provider": "elevenlabs", "tts_voice": "rachel"},
}


def _with_prompt(prompt: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda config: {**config, "system_prompt": prompt}


async def _seed(pool: asyncpg.Pool, calls: int) -> str:
    agent = await agents.create_agent(pool, MINIMAL_CONFIG, "bench")
    for n in range(1, VERSIONS + 1):
        await agents.update_draft(pool, agent.id, _with_prompt(f"Prompt {n}."), "bench")
        await agents.publish(pool, agent.id, f"v{n}", "", "bench")
    config_hash = (await agents.get_agent(pool, agent.id)).draft.config_hash
    now = datetime.now(UTC)
    await pool.execute(
        SEED_CALLS, agent.id, config_hash, CHANNEL_A, CHANNEL_B, calls, VERSIONS, now, DAYS
    )
    await pool.execute(SEED_KEYS)
    # Fresh statistics and a visibility map, as autovacuum keeps them in production.
    await pool.execute("VACUUM ANALYZE calls")
    return agent.id


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
    return {"p50_ms": round(statistics.median(timings), 1), "max_ms": round(max(timings), 1)}


async def _measure(url: str, calls: int, runs: int) -> dict[str, Any]:
    pool = await create_pool(url)
    try:
        started = time.perf_counter()
        agent_id = await _seed(pool, calls)
        seed_s = time.perf_counter() - started
        until = datetime.now(UTC) + timedelta(minutes=1)
        since = until - timedelta(days=DAYS + 1)

        async def versions() -> Any:
            groups = await analytics.version_outcomes(pool, agent_id, since, until)
            return analytics.version_report(groups)

        async def ab() -> Any:
            groups = await analytics.variant_outcomes(pool, CHANNEL_A, since, until)
            return analytics.variant_report(groups, ())

        store_versions, store_ab = await _time(runs, versions), await _time(runs, ab)
        token = await create_token(pool, "bench", "viewer")
        client: TestClient[Any, Any] = TestClient(
            TestServer(create_app(Settings(database_url=url)))
        )
        await client.start_server()
        try:
            query = {"agent_id": agent_id, "since": since.isoformat(), "until": until.isoformat()}
            headers = {"Authorization": f"Bearer {token}"}
            sample: dict[str, Any] = {}

            async def http() -> None:
                resp = await client.get("/v1/analytics/versions", params=query, headers=headers)
                assert resp.status == 200, await resp.text()
                sample.update(await resp.json())

            http_versions = await _time(runs, http)
        finally:
            await client.close()
    finally:
        await pool.close()
    return {
        "calls": calls,
        "runs": runs,
        # Other work on the machine skews the timings: the 1, 5, 15-minute load averages.
        "load_avg": [round(load, 2) for load in os.getloadavg()],
        **store_versions,
        "ab_p50_ms": store_ab["p50_ms"],
        "ab_max_ms": store_ab["max_ms"],
        "http_p50_ms": http_versions["p50_ms"],
        "http_max_ms": http_versions["max_ms"],
        "seed_s": round(seed_s, 1),
        "rows": len(sample["items"]),
        "sample_row": sample["items"][-1],
    }


async def main(calls: int, runs: int) -> dict[str, Any]:
    server = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    async with scratch_database(server, "bench") as url:
        return await _measure(url, calls, runs)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.calls, args.runs)), indent=2))

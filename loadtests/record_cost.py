"""Postgres CPU per call of the record statement (store/calls.py record_calls), at batches of
100 as the group commit sends them under load, with the rollup triggers on and off in turn:
`python -m loadtests.record_cost`. Prints a JSON line per measurement, then the medians and
their ratio. Runs against scratch databases on the local server (it reads the backend's CPU
from /proc, so Postgres must run on this machine). The router's own work is the same either
way: the rollups are kept by triggers inside Postgres.

Half the calls remember their caller (a sticky A/B channel), one in ten is a provider retry of
a call recorded in an earlier batch, as a provider's redelivery would be.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from harness.postgres import scratch_database
from loadtests.procstat import cpu_seconds
from store import agents
from store.calls import Candidate, NewCall, record_calls
from store.db import create_pool
from store.settings import DEFAULT_DATABASE_URL

CHANNEL = "+14155550100"
CONFIG = {
    "name": "Record cost",
    "system_prompt": "You are a benchmark.",
    "llm": {"provider": "openai", "model": "gpt-4o-mini"},
    "voice": {"tts_provider": "elevenlabs", "tts_voice": "rachel"},
}
ADD_CHANNEL = "INSERT INTO channels (number, salt, updated_by) VALUES ($1, 'salt', 'bench')"
ROLLUPS_OFF = "ALTER TABLE calls DISABLE TRIGGER calls_rollups_insert"


async def _candidates(pool: asyncpg.Pool) -> tuple[Candidate, ...]:
    agent = await agents.create_agent(pool, CONFIG, "bench")
    # Two versions of one config: the statement's cost does not depend on what they hold.
    versions = [
        await agents.publish(pool, agent.id, f"v{n}", "", "bench", allow_unchanged=True)
        for n in (1, 2)
    ]
    await pool.execute(ADD_CHANNEL, CHANNEL)
    return tuple(
        Candidate(label, agent.id, v.version, None, v.config_hash)
        for label, v in zip("ab", versions, strict=True)
    )


def _batch(n: int, size: int, offered: tuple[Candidate, ...], started: datetime) -> list[NewCall]:
    calls = []
    for i in range(size):
        # One in ten repeats a call of the previous batch: a provider retry.
        sid = f"CA{n - 1}-{i}" if n and i % 10 == 0 else f"CA{n}-{i}"
        calls.append(
            NewCall(
                call_id="call_" + secrets.token_hex(12),
                provider="twilio",
                provider_call_id=sid,
                channel=CHANNEL,
                from_number=f"+1415{(n * size + i) % 10_000_000:07d}",
                routing_revision=1,
                started_at=started + timedelta(milliseconds=n * size + i),
                drawn="ab"[i % 2],
                remember=i % 2 == 0,
                candidates=offered,
            )
        )
    return calls


async def measure(database_url: str, batches: int, size: int, rollups: bool) -> dict[str, Any]:
    # One connection, so that every statement runs in the backend whose CPU is read.
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        if not rollups:
            await pool.execute(ROLLUPS_OFF)
        offered = await _candidates(pool)
        backend = await pool.fetchval("SELECT pg_backend_pid()")
        started = datetime.now(UTC)
        for n in range(10):  # warm-up: plans cached, pages in memory
            await record_calls(pool, _batch(-1 - n, size, offered, started))
        cpu, wall = cpu_seconds(backend), time.perf_counter()
        for n in range(batches):
            await record_calls(pool, _batch(n, size, offered, started))
        cpu, wall = cpu_seconds(backend) - cpu, time.perf_counter() - wall
        recorded = await pool.fetchval("SELECT count(*) FROM calls")
    finally:
        await pool.close()
    calls = batches * size
    return {
        "rollups": rollups,
        "batches": batches,
        "batch_size": size,
        "calls": calls,
        "rows": recorded,
        "postgres_cpu_us_per_call": round(cpu / calls * 1e6, 1),
        "wall_us_per_call": round(wall / calls * 1e6, 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    cost: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.runs):
        # On and off alternately, so that a change in the machine's load touches both alike.
        for rollups in (True, False):
            async with scratch_database(server, "record_cost") as url:
                found = await measure(url, args.batches, args.size, rollups)
            print(json.dumps(found), flush=True)
            cost[rollups].append(found["postgres_cpu_us_per_call"])
    on, off = statistics.median(cost[True]), statistics.median(cost[False])
    summary = {"median_us_rollups_on": on, "median_us_rollups_off": off}
    print(json.dumps(summary | {"rollups_on_to_off": round(on / off, 3)}))


if __name__ == "__main__":
    asyncio.run(main())

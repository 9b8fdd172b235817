"""Postgres CPU per call of the record statement (store/calls.py record_calls).

`python -m loadtests.record_cost`: at batches of 100 as the group commit sends them under load,
with the rollup triggers on and off in turn; prints a JSON line per measurement, then the
medians and their ratio. The router's own work is the same either way: the rollups are kept by
triggers inside Postgres. Half the calls remember their caller (a sticky A/B channel), one in
ten is a provider retry of a call recorded in an earlier batch, as a provider's redelivery
would be.

`python -m loadtests.record_cost --components`: where the statement's time goes, one thing
taken away at a time (an index, the rollup trigger, the sticky upsert, a setting), each
variant in a fresh database and all of them in turn within a round, at each `--sizes` batch
size; calls as the bench sends them (fresh call ids, 15% sticky, 1,000 channels), then the
cost of each component as the difference to the whole, and one batch under EXPLAIN ANALYZE.

Both run against scratch databases on the local server: they read the backend's CPU from
/proc, so Postgres must run on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from harness.postgres import scratch_database
from loadtests.procstat import run_seconds
from store import agents
from store.calls import RECORD_CALLS, Candidate, NewCall, _parameters, record_calls
from store.db import create_pool
from store.settings import DEFAULT_DATABASE_URL

CONFIG = {
    "name": "Record cost",
    "system_prompt": "You are a benchmark.",
    "llm": {"provider": "openai", "model": "gpt-4o-mini"},
    "voice": {"tts_provider": "elevenlabs", "tts_voice": "rachel"},
}
ADD_CHANNELS = """
INSERT INTO channels (number, salt, updated_by)
SELECT '+1415555' || lpad(n::text, 4, '0'), 'salt', 'bench' FROM generate_series(0, $1 - 1) n
"""
ROLLUPS_OFF = "ALTER TABLE calls DISABLE TRIGGER calls_rollups_insert"
# How the connection's prepared record statement was planned: Postgres plans the first five
# executions for their parameters (custom plans), then keeps the cached generic plan unless its
# estimated cost is higher than theirs.
PLANS = """
SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1
"""


def _channel(n: int) -> str:
    """The number ADD_CHANNELS gives channel `n`."""
    return f"+1415555{n:04d}"


async def _candidates(pool: asyncpg.Pool, agent_count: int) -> list[tuple[Candidate, ...]]:
    """Per agent, the two variants a channel of that agent offers."""
    offered = []
    for _ in range(agent_count):
        agent = await agents.create_agent(pool, CONFIG, "bench")
        # Two versions of one config: the statement's cost does not depend on what they hold.
        versions = [
            await agents.publish(pool, agent.id, f"v{n}", "", "bench", allow_unchanged=True)
            for n in (1, 2)
        ]
        offered.append(
            tuple(
                Candidate(label, agent.id, v.version, None, v.config_hash)
                for label, v in zip("ab", versions, strict=True)
            )
        )
    return offered


def _batch(
    n: int,
    size: int,
    offered: list[tuple[Candidate, ...]],
    started: datetime,
    *,
    retries: bool = True,
    sticky: int = 2,
    channels: int = 1,
) -> list[NewCall]:
    """Batch `n`: with `retries`, one call in ten repeats a call of the previous batch (a
    provider retry); one call in `sticky` remembers its caller (0: none). Calls go to the
    `channels` in turn, channel k served by agent k modulo the agents `offered`."""
    calls = []
    for i in range(size):
        sid = f"CA{n - 1}-{i}" if retries and n and i % 10 == 0 else f"CA{n}-{i}"
        k = (n * size + i) % channels
        calls.append(
            NewCall(
                call_id="call_" + secrets.token_hex(12),
                provider="twilio",
                provider_call_id=sid,
                channel=_channel(k),
                from_number=f"+1415{(n * size + i) % 10_000_000:07d}",
                routing_revision=1,
                started_at=started + timedelta(milliseconds=n * size + i),
                drawn="ab"[i % 2],
                remember=sticky > 0 and i % sticky == 0,
                candidates=offered[k % len(offered)],
            )
        )
    return calls


@dataclass(frozen=True)
class Variant:
    """The record path with one thing changed: `setup` run on the migrated database, session
    `settings`, and the shape of the calls: bench-like by default (fresh call ids, 15% of the
    calls sticky as the bench's A/B channels are, 1,000 channels, so that a batch's calls touch
    as many rollup groups and index pages as the bench's do)."""

    setup: tuple[str, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()
    retries: bool = False
    sticky: int = 7
    channels: int = 1000
    agents: int = 50
    explain: bool = False


# The rollups comparison's calls: one channel of one agent, half of them sticky, one in ten a
# provider retry.
ONE_CHANNEL = Variant(retries=True, sticky=2, channels=1, agents=1)


async def measure(
    database_url: str,
    batches: int,
    size: int,
    rollups: bool,
    variant: Variant = ONE_CHANNEL,
) -> dict[str, Any]:
    """The backend's CPU per call over `batches` batches of `size` calls, after a warm-up, with
    the `variant`'s schema change and settings applied and calls as it sends them."""
    # One connection, so that every statement runs in the backend whose CPU is read.
    pool = await create_pool(
        database_url, min_size=1, max_size=1, server_settings=dict(variant.settings)
    )
    try:
        if not rollups:
            await pool.execute(ROLLUPS_OFF)
        for statement in variant.setup:
            await pool.execute(statement)
        offered = await _candidates(pool, variant.agents)
        await pool.execute(ADD_CHANNELS, variant.channels)
        backend = await pool.fetchval("SELECT pg_backend_pid()")
        started = datetime.now(UTC)

        def batch(n: int) -> list[NewCall]:
            return _batch(
                n,
                size,
                offered,
                started,
                retries=variant.retries,
                sticky=variant.sticky,
                channels=variant.channels,
            )

        for n in range(10):  # warm-up: plans cached, pages in memory
            await record_calls(pool, batch(-1 - n))
        cpu, wall = run_seconds(backend), time.perf_counter()
        for n in range(batches):
            await record_calls(pool, batch(n))
        cpu, wall = run_seconds(backend) - cpu, time.perf_counter() - wall
        recorded = await pool.fetchval("SELECT count(*) FROM calls")
        plans = await pool.fetchrow(PLANS, RECORD_CALLS)
        explained = None
        if variant.explain:
            # Inside a transaction rolled back: the plan and its timings, nothing recorded.
            async with pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                plan = await conn.fetch(
                    EXPLAIN + RECORD_CALLS,
                    *_parameters(batch(batches)),
                )
                await tx.rollback()
            explained = [r[0] for r in plan]
    finally:
        await pool.close()
    calls = batches * size
    found: dict[str, Any] = {
        "rollups": rollups,
        "batches": batches,
        "batch_size": size,
        "calls": calls,
        "rows": recorded,
        "postgres_cpu_us_per_call": round(cpu / calls * 1e6, 1),
        "wall_us_per_call": round(wall / calls * 1e6, 1),
        "generic_plans": plans["generic_plans"],
        "custom_plans": plans["custom_plans"],
    }
    if explained is not None:
        found["explain"] = explained
    return found


# What `--components` takes away, one at a time. The sticky share stays as the bench's but for
# "no sticky calls"; "synchronous_commit off" is measured only to show what the commit's flush
# costs in CPU: the record path answers only after a durable commit.
VARIANTS = {
    "as is": Variant(explain=True),
    "no rollup trigger": Variant(setup=(ROLLUPS_OFF,)),
    "no calls_agent_version_started_outcomes": Variant(
        setup=("DROP INDEX calls_agent_version_started_outcomes",)
    ),
    "no calls_channel_started": Variant(setup=("DROP INDEX calls_channel_started",)),
    "no unique call_keys.call_id": Variant(
        setup=("ALTER TABLE call_keys DROP CONSTRAINT call_keys_call_id_key",)
    ),
    "no sticky calls": Variant(sticky=0),
    "plan_cache_mode generic": Variant(settings=(("plan_cache_mode", "force_generic_plan"),)),
    "plan_cache_mode custom": Variant(settings=(("plan_cache_mode", "force_custom_plan"),)),
    "synchronous_commit off": Variant(settings=(("synchronous_commit", "off"),)),
}
EXPLAIN = "EXPLAIN (ANALYZE, BUFFERS, WAL, COSTS OFF) "


def fixed_and_per_call(us_per_call: dict[int, float]) -> dict[str, float]:
    """A batch's cost as a fixed part plus a part per call: the least-squares line through
    (size, µs a batch) at each size measured (at least two)."""
    sizes = list(us_per_call)
    per_call, fixed = statistics.linear_regression(
        sizes, [us_per_call[size] * size for size in sizes]
    )
    return {"fixed_us_per_batch": round(fixed, 1), "us_per_call": round(per_call, 1)}


async def components(server: str, batches: int, sizes: list[int], runs: int) -> None:
    """Every variant at every size, `runs` rounds; then per size the median of each variant,
    and its difference to "as is": what the component it takes away costs a call; then each
    variant's fixed and per-call parts."""
    cost: dict[tuple[int, str], list[float]] = {}
    for _ in range(runs):
        for size in sizes:
            # Fewer batches of the larger sizes: about the same number of calls at each.
            count = max(batches * 15 // size, 20)
            for name, variant in VARIANTS.items():
                async with scratch_database(server, "record_cost") as url:
                    found = await measure(url, count, size, True, variant)
                print(json.dumps({"variant": name} | found), flush=True)
                cost.setdefault((size, name), []).append(found["postgres_cpu_us_per_call"])
    for size in sizes:
        whole = statistics.median(cost[size, "as is"])
        for name in VARIANTS:
            median = statistics.median(cost[size, name])
            summary = {"batch_size": size, "variant": name, "median_us_per_call": median}
            print(json.dumps(summary | {"saves_us_per_call": round(whole - median, 1)}))
    if len(set(sizes)) > 1:
        for name in VARIANTS:
            medians = {size: statistics.median(cost[size, name]) for size in sizes}
            print(json.dumps({"variant": name} | fixed_and_per_call(medians)))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--components", action="store_true", help="where the time goes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 15, 100])
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    if args.components:
        await components(server, args.batches, args.sizes, args.runs)
        return
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

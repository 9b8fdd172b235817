"""Postgres CPU per call of the record statement (store/calls.py record_calls) and of its share
of the rollups' compaction, which folds the calls recorded since its last run (migration 0015).

`python -m loadtests.record_cost`: at batches of 100 as the group commit sends them under load,
with the rollups kept by the compaction (as is) and by the insert trigger in the record's
transaction (as before migration 0015), taking turns batch by batch; prints a JSON line per
measurement, then the medians and their ratio. The router's own work is the same either way:
the rollups are kept inside Postgres. Half the calls remember their caller (a sticky A/B
channel), one in ten is a provider retry of a call recorded in an earlier batch, as a provider's
redelivery would be.

`python -m loadtests.record_cost --components`: where the statement's time goes, one thing
taken away (or put back) at a time (an index, the rollups, the sticky upsert, a key, the
agents' and config blobs' lookups, a setting), each variant in a fresh database, all of them
taking turns batch by batch, at each `--sizes` batch size; calls as the bench sends them
(fresh call ids, every call sticky by caller, 1,000 channels), then the cost of each component
as the difference to the whole, and one batch under EXPLAIN ANALYZE.

`python -m loadtests.record_cost --compaction`: the compaction alone, folding calls into rollup
rows that exist, with call_rollups as migration 0016 left it and with its pages full as before.

`python -m loadtests.record_cost --history N`: the record statement with N keys of earlier calls
in `call_keys`, its call ids minted as the router mints them (in time order) and at random, as
before: what a retained history costs each new call's keys.

Every variant runs the compaction on its own connection after every COMPACT_CALLS calls, its
CPU counted with the record statement's.

Both run against scratch databases on the local server: they read the backend's CPU from
/proc, so Postgres must run on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import statistics
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from harness.postgres import scratch_database
from loadtests.procstat import run_seconds
from store import agents, rollups
from store.calls import (
    CALL_ID_BYTES,
    RECORD_CALLS,
    Candidate,
    Known,
    NewCall,
    _parameters,
    new_call_id,
    record_calls,
    record_calls_on,
)
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
# About a second of the bench's calls on a slow host: the admin service compacts every second
# (AGENTVER_ROLLUP_COMPACT_S).
COMPACT_CALLS = 1000
# The rollups as migration 0012 kept them: the insert trigger, in the record's transaction; every
# call counted by it, so none is pending for the compaction, and no index on recorded_xid.
ROLLUPS_IN_TRANSACTION = (
    "ALTER TABLE calls ALTER COLUMN recorded_xid SET DEFAULT '0'",
    "DROP INDEX calls_recorded_xid",
    """
CREATE FUNCTION call_rollups_on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    added calls[];
BEGIN
    added := ARRAY(SELECT n::calls FROM new_calls n);
    INSERT INTO call_rollup_deltas SELECT * FROM call_rollup_changes(added, '{}');
    RETURN NULL;
END;
$$""",
    """
CREATE TRIGGER calls_rollups_insert AFTER INSERT ON calls REFERENCING NEW TABLE AS new_calls
    FOR EACH STATEMENT EXECUTE FUNCTION call_rollups_on_insert()""",
)
# No rollups at all: the calls neither counted nor indexed for the compaction.
NO_ROLLUPS = ("DROP INDEX calls_recorded_xid",)
# The keys of `$1` earlier calls, a millisecond apart up to a second ago, their call ids made
# as `new_call_id` makes them ($2 'ordered') or at random ('random').
HISTORY_KEYS = """
INSERT INTO call_keys (provider, provider_call_id, call_id, started_at)
SELECT 'twilio', 'CA' || md5(g::text),
       'call_' || CASE $2::text WHEN 'ordered' THEN lpad(to_hex(ms), 12, '0') ELSE '' END
               || substr(md5('id' || g), 1, 24),
       to_timestamp(ms / 1000.0)
FROM generate_series(1, $1) g,
     LATERAL (SELECT (extract(epoch FROM now()) * 1000)::bigint - 1000 - $1 + g AS ms) t
"""
# Bytes of WAL the server has written so far.
WAL_POSITION = "SELECT (pg_current_wal_insert_lsn() - '0/0')::bigint"
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


def _call_sid(n: int, i: int) -> str:
    """Call `i` of batch `n`'s CallSid: `CA` and 32 hex digits that look random, as Twilio's
    do, and as HISTORY_KEYS' do (rows of another size would leave room for new ones all over
    a table it seeded)."""
    return "CA" + hashlib.md5(f"{n}-{i}".encode()).hexdigest()  # noqa: S324 (not a secret)


def _batch(
    n: int,
    size: int,
    offered: list[tuple[Candidate, ...]],
    started: datetime,
    *,
    retries: bool = True,
    sticky: int = 2,
    channels: int = 1,
    random_ids: bool = False,
) -> list[NewCall]:
    """Batch `n`: with `retries`, one call in ten repeats a call of the previous batch (a
    provider retry); one call in `sticky` remembers its caller (0: none). Calls go to the
    `channels` in turn, channel k served by agent k modulo the agents `offered`. Call ids as
    the router mints them, or with `random_ids` random ones, as it minted them before."""
    calls = []
    for i in range(size):
        sid = _call_sid(n - 1 if retries and n and i % 10 == 0 else n, i)
        k = (n * size + i) % channels
        calls.append(
            NewCall(
                call_id="call_" + secrets.token_hex(CALL_ID_BYTES) if random_ids else new_call_id(),
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
    `settings`, and the shape of the calls: bench-like by default (fresh call ids, every call
    remembering its caller as every bench channel is sticky by caller, 1,000 channels, so that
    a batch's calls touch as many rollup groups and index pages as the bench's do), recorded
    as the router's call writer records them: each agent and config blob looked up once
    (store/calls.py `Known`), unless `lookups`; `history` keys of earlier calls in call_keys
    (HISTORY_KEYS), their ids and the calls' random with `random_ids`."""

    setup: tuple[str, ...] = ()
    settings: tuple[tuple[str, str], ...] = ()
    retries: bool = False
    sticky: int = 1
    channels: int = 1000
    agents: int = 50
    explain: bool = False
    compact: bool = True
    lookups: bool = False
    history: int = 0
    random_ids: bool = False


# The rollups comparison's calls: one channel of one agent, half of them sticky, one in ten a
# provider retry.
ONE_CHANNEL = Variant(retries=True, sticky=2, channels=1, agents=1)


class Subject:
    """A variant in a scratch database of its own, on one connection, so that every statement
    runs in the backend whose CPU is read."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        backend: int,
        variant: Variant,
        offered: list[tuple[Candidate, ...]],
    ):
        self.pool, self.backend, self.variant, self.offered = pool, backend, variant, offered
        self.started = datetime.now(UTC)
        self.cpu_s = 0.0
        self.wal_bytes = 0
        self.uncompacted = 0
        self.known = None if variant.lookups else Known()

    @classmethod
    @asynccontextmanager
    async def open(cls, server: str, variant: Variant) -> AsyncIterator[Subject]:
        async with scratch_database(server, "record_cost") as url:
            pool = await create_pool(
                url, min_size=1, max_size=1, server_settings=dict(variant.settings)
            )
            try:
                for statement in variant.setup:
                    await pool.execute(statement)
                if variant.history:
                    ids = "random" if variant.random_ids else "ordered"
                    await pool.execute(HISTORY_KEYS, variant.history, ids)
                    await pool.execute("VACUUM ANALYZE call_keys")
                offered = await _candidates(pool, variant.agents)
                await pool.execute(ADD_CHANNELS, variant.channels)
                yield cls(pool, await pool.fetchval("SELECT pg_backend_pid()"), variant, offered)
            finally:
                await pool.close()

    @classmethod
    @asynccontextmanager
    async def each(
        cls, server: str, variants: dict[str, Variant]
    ) -> AsyncIterator[dict[str, Subject]]:
        """A subject for each variant, by name, each in a scratch database of its own."""
        async with AsyncExitStack() as stack:
            yield {
                name: await stack.enter_async_context(cls.open(server, variant))
                for name, variant in variants.items()
            }

    def batch(self, n: int, size: int) -> list[NewCall]:
        v = self.variant
        return _batch(
            n,
            size,
            self.offered,
            self.started,
            retries=v.retries,
            sticky=v.sticky,
            channels=v.channels,
            random_ids=v.random_ids,
        )

    async def record(self, n: int, size: int) -> float:
        """Record batch `n`, and compact if COMPACT_CALLS have been recorded since the last
        compaction; the backend's CPU seconds for both. The WAL they wrote adds to `wal_bytes`
        (the server's WAL position before and after: the variants record one at a time)."""
        wal = await self.pool.fetchval(WAL_POSITION)
        cpu = run_seconds(self.backend)
        async with self.pool.acquire() as conn:
            await record_calls_on(conn, self.batch(n, size), self.known)
        self.uncompacted += size
        if self.variant.compact and self.uncompacted >= COMPACT_CALLS:
            await rollups.compact(self.pool)
            self.uncompacted = 0
        cpu = run_seconds(self.backend) - cpu
        self.wal_bytes += await self.pool.fetchval(WAL_POSITION) - wal
        return cpu

    async def report(self, batches: int, size: int) -> dict[str, Any]:
        calls = batches * size
        found: dict[str, Any] = {
            "batches": batches,
            "batch_size": size,
            "calls": calls,
            "rows": await self.pool.fetchval("SELECT count(*) FROM calls"),
            "postgres_cpu_us_per_call": round(self.cpu_s / calls * 1e6, 1),
            "wal_bytes_per_call": round(self.wal_bytes / calls),
        }
        found |= dict(await self.pool.fetchrow(PLANS, RECORD_CALLS))
        if self.variant.explain:
            # Inside a transaction rolled back: the plan and its timings, nothing recorded.
            async with self.pool.acquire() as conn:
                tx = conn.transaction()
                await tx.start()
                plan = await conn.fetch(
                    EXPLAIN + RECORD_CALLS, *_parameters(self.batch(batches, size), self.known)
                )
                await tx.rollback()
            found["explain"] = [r[0] for r in plan]
        return found


async def take_turns(subjects: list[Subject], first: int, batches: int, size: int) -> None:
    """Batches `first` to `first + batches - 1` on every subject, taking turns batch by batch,
    the first of each turn rotating; each subject counts the CPU of those numbered from 0."""
    for n in range(first, first + batches):
        k = n % len(subjects)
        for subject in subjects[k:] + subjects[:k]:
            cpu = await subject.record(n, size)
            if n >= 0:
                subject.cpu_s += cpu


async def measure(
    server: str, variants: dict[str, Variant], batches: int, size: int
) -> dict[str, dict[str, Any]]:
    """Each variant's backend CPU per call over `batches` batches of `size` calls, after a
    warm-up. The variants take turns batch by batch, the first of each turn rotating: this
    host runs a CPU at one speed for seconds at a time, then at up to 1.8x another
    (loadtests/README.md), so variants measured one after the other compare the host's phases
    as much as the variants; taking turns, every variant meets every phase."""
    async with Subject.each(server, variants) as subjects:
        # The first ten batches warm up: plans cached, pages in memory.
        await take_turns(list(subjects.values()), -10, batches + 10, size)
        return {name: await s.report(batches, size) for name, s in subjects.items()}


# What `--components` takes away, one at a time; "synchronous_commit off" is measured only to
# show what the commit's flush costs in CPU: the record path answers only after a durable
# commit. "with the caller assignments' foreign key" puts back what migration 0014 took away,
# "call_rollups at fillfactor 100" what migration 0016 did.
VARIANTS = {
    "as is": Variant(explain=True),
    "the rollups in the record's transaction": Variant(setup=ROLLUPS_IN_TRANSACTION),
    "no rollups": Variant(setup=NO_ROLLUPS, compact=False),
    "no calls_agent_version_started_outcomes": Variant(
        setup=("DROP INDEX calls_agent_version_started_outcomes",)
    ),
    "no calls_channel_started": Variant(setup=("DROP INDEX calls_channel_started",)),
    "no unique call_keys.call_id": Variant(
        setup=("ALTER TABLE call_keys DROP CONSTRAINT call_keys_call_id_key",)
    ),
    "no sticky calls": Variant(sticky=0),
    "every agent and config blob looked up": Variant(lookups=True),
    "with the caller assignments' foreign key": Variant(
        setup=(
            "ALTER TABLE caller_assignments ADD FOREIGN KEY (number) REFERENCES channels"
            " ON DELETE CASCADE",
        )
    ),
    "call_rollups at fillfactor 100": Variant(
        setup=("ALTER TABLE call_rollups RESET (fillfactor)",)
    ),
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
            for name, found in (await measure(server, VARIANTS, count, size)).items():
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


# The updates of rollup rows, and how many were HOT (no new index entries), of this backend's
# that its statistics have not flushed yet: read before and after a compaction, in its
# transaction.
HOT_UPDATES = """
SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'call_rollups'
"""
# Batches of 15 a compaction folds in `--compaction`: 3,000 calls over 1,000 channels, about
# half a second of the bench's router at 32 connections.
COMPACTION_BATCHES = 200
# The compaction as is, and with call_rollups' pages full as before migration 0016.
FILLFACTORS = {
    "as is": Variant(compact=False),
    "call_rollups at fillfactor 100": replace(
        VARIANTS["call_rollups at fillfactor 100"], compact=False
    ),
}


async def compactions(
    server: str, variants: dict[str, Variant], cycles: int, batches: int, size: int
) -> dict[str, dict[str, Any]]:
    """The compaction alone, as the admin service runs it beside a busy router: in each variant,
    `cycles` times, `batches` batches of `size` calls (over the same channels, so that a
    compaction folds into the same groups each time), then one compaction, its backend's CPU
    read around it; the variants take turns. Per variant (also printed as a JSON line): the
    median ms a compaction and µs a call folded, and how many of its updates were HOT, the
    first two cycles, which insert the groups' rows, left out."""
    async with Subject.each(server, variants) as subjects:
        spent: dict[str, list[float]] = {name: [] for name in subjects}
        updates = {name: [0, 0] for name in subjects}
        for cycle in range(cycles):
            for subject in subjects.values():
                for n in range(cycle * batches, (cycle + 1) * batches):
                    await record_calls(subject.pool, subject.batch(n, size))
            for name, subject in subjects.items():
                async with subject.pool.acquire() as conn, conn.transaction():
                    before = await conn.fetchrow(HOT_UPDATES)
                    cpu = run_seconds(subject.backend)
                    await conn.fetchval("SELECT compact_call_rollups()")
                    spent[name].append(run_seconds(subject.backend) - cpu)
                    after = await conn.fetchrow(HOT_UPDATES)
                if cycle >= 2:
                    for i in (0, 1):
                        updates[name][i] += after[i] - before[i]
        found: dict[str, dict[str, Any]] = {}
        for name, seconds in spent.items():
            median = statistics.median(seconds[2:])
            updated, hot = updates[name]
            found[name] = {
                "calls_a_compaction": batches * size,
                "median_ms": round(median * 1e3, 2),
                "us_per_call": round(median * 1e6 / (batches * size), 1),
                "updates": updated,
                "hot_updates": hot,
            }
            print(json.dumps({"variant": name} | found[name]))
        return found


async def history(server: str, keys: int, batches: int, size: int, runs: int) -> None:
    """The record statement's cost a call with `keys` keys of earlier calls, call ids in time
    order against random ones, taking turns: Postgres' CPU and the WAL written a call, and the
    ratio of the CPU, in `runs` runs of `batches` batches, each from a checkpoint, over the same
    two databases (seeding ten million keys takes minutes); a JSON line each."""
    variants = {
        "ordered": Variant(history=keys),
        "random": Variant(history=keys, random_ids=True),
    }
    async with Subject.each(server, variants) as subjects:
        turn = list(subjects.values())
        await take_turns(turn, -10, 10, size)
        for run in range(runs):
            # Each run from a checkpoint: every index page's first change after it is written
            # whole into the WAL, so where the keys land decides how much WAL they write.
            await turn[0].pool.execute("CHECKPOINT")
            for subject in turn:
                subject.cpu_s, subject.wal_bytes = 0.0, 0
            await take_turns(turn, run * batches, batches, size)
            calls = batches * size
            us = {name: round(s.cpu_s / calls * 1e6, 1) for name, s in subjects.items()}
            wal = {name: round(s.wal_bytes / calls) for name, s in subjects.items()}
            ratio = round(us["ordered"] / us["random"], 3)
            found = {"us_per_call": us, "wal_bytes_per_call": wal, "ratio": ratio}
            print(json.dumps({"keys": keys, "run": run} | found), flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--components", action="store_true", help="where the time goes")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 15, 100])
    parser.add_argument(
        "--compaction", action="store_true", help="the compaction alone, fillfactor 50 and 100"
    )
    parser.add_argument("--cycles", type=int, default=14)
    parser.add_argument("--history", type=int, help="keys of earlier calls: ordered or random ids")
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    if args.history:
        await history(server, args.history, args.batches, args.size, args.runs)
        return
    if args.compaction:
        await compactions(server, FILLFACTORS, args.cycles, COMPACTION_BATCHES, 15)
        return
    if args.components:
        await components(server, args.batches, args.sizes, args.runs)
        return
    kept_by = {
        "compaction": ONE_CHANNEL,
        "transaction": replace(ONE_CHANNEL, setup=ROLLUPS_IN_TRANSACTION),
    }
    cost: dict[str, list[float]] = {name: [] for name in kept_by}
    for _ in range(args.runs):
        for name, found in (await measure(server, kept_by, args.batches, args.size)).items():
            print(json.dumps({"rollups_kept_by": name} | found), flush=True)
            cost[name].append(found["postgres_cpu_us_per_call"])
    compacted, in_transaction = (statistics.median(cost[name]) for name in kept_by)
    summary = {"median_us_compaction": compacted, "median_us_transaction": in_transaction}
    print(json.dumps(summary | {"compaction_to_transaction": round(compacted / in_transaction, 3)}))


if __name__ == "__main__":
    asyncio.run(main())

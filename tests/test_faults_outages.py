"""Faults under load, against real router processes and a Redis and Postgres of the module's
own: Redis killed for 10 s, Postgres stopped for 30 s, a rolling restart by SIGTERM. No webhook
may fail, every answered call must land in Postgres exactly once (and, through the Postgres
outage, be ended once with the duration its status callback gave), a voice agent's lookups must
be answered through the outage, and a pin changed while the change feed was down must be
honoured. Each test prints its counts as one JSON line (-s)."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.net import free_port
from harness.postgres import PostgresServer
from store.db import create_pool
from tests.faults import (
    CHANNEL,
    FEED_CONNECTED,
    PINNED_LATER,
    TWILIO_TOKEN,
    Caller,
    Rig,
    RouterProcess,
    count_landed,
    count_recorded,
    loaded,
    pin_channel,
    report,
    scrape_metric,
    serves_version,
    session,
)
from tests.polling import eventually

pytestmark = pytest.mark.faults

REDIS_OUTAGE_S = 10.0
POSTGRES_OUTAGE_S = 30.0
WARM_UP_S = 2.0
# Seconds after Postgres returns for every spooled call to be replayed (one replay a second).
REPLAY_WITHIN_S = 15.0


async def test_redis_killed_for_10_s(rig: Rig, routers: list[RouterProcess]) -> None:
    port = free_port()
    routers.append(rig.router(port, "redis-outage"))
    async with session() as client:
        caller = Caller(client, port, CHANNEL)
        async with loaded(caller) as load:
            await asyncio.sleep(WARM_UP_S)
            before, fault_began = load.sent, time.monotonic()
            rig.redis.kill()
            await asyncio.sleep(REDIS_OUTAGE_S)
            during, fault_ended = load.sent - before, time.monotonic()
            rig.redis.start()
            await asyncio.sleep(WARM_UP_S)
    recorded = await count_recorded(rig, load)
    report("redis_killed", load, recorded, (fault_began, fault_ended), outage_s=REDIS_OUTAGE_S)
    assert load.summary()["failed"] == 0 and load.fallbacks == 0, load.summary()
    assert during > 0
    assert recorded["recorded"] == len(load.answered)
    assert recorded["missing"] == recorded["duplicated"] == recorded["mismatched"] == 0


async def test_postgres_stopped_for_30_s(rig: Rig, routers: list[RouterProcess]) -> None:
    port = free_port()
    routers.append(rig.router(port, "postgres-outage"))
    async with session() as client:
        caller = Caller(client, port, CHANNEL, hang_up=True)
        await caller.call("CA-warm-pinned-later", to=PINNED_LATER)
        async with loaded(caller) as load:
            await asyncio.sleep(WARM_UP_S)
            # The voice agent's token is validated, and the config cached, before the outage.
            warm = await caller.lookup(
                _config_path(next(iter(load.answered.values()))), rig.runtime_token
            )
            before, fault_began = load.sent, time.monotonic()
            rig.postgres.stop()
            # A fast shutdown ends the feed's session: the worker notices at once.
            await eventually(lambda: scrape_metric(port, FEED_CONNECTED), lambda v: v == 0)
            await asyncio.sleep(POSTGRES_OUTAGE_S / 2)
            # A provider retry of a spooled call gets the answer the call got.
            spooled_sid = next(reversed(load.answered))
            retried = await caller.call(spooled_sid)
            # Past the token cache's TTL, with Postgres out of reach.
            lookups = await _lookups(caller, rig, load.answered[spooled_sid])
            await asyncio.sleep(POSTGRES_OUTAGE_S / 2)
            during, fault_ended = load.sent - before, time.monotonic()
            await _repin_while_feed_is_down(rig)
            # Read after the re-pin's commit: the router cannot have seen it through the feed.
            feed_down = await scrape_metric(port, FEED_CONNECTED) == 0
            rig.postgres.start()
            await asyncio.sleep(WARM_UP_S)
        honoured_after_s = await serves_version(caller, PINNED_LATER, "2")
    recorded, ended = await eventually(
        lambda: count_landed(rig, load),
        lambda landed: not landed[0]["missing"] and not landed[1]["not_ended"],
        within_s=REPLAY_WITHIN_S,
        interval_s=0.5,
    )
    spool = {
        event: await scrape_metric(port, f'agentver_spool_records_total{{event="{event}"}}')
        for event in ("spooled", "replayed", "dropped")
    }
    report(
        "postgres_stopped",
        load,
        recorded,
        (fault_began, fault_ended),
        outage_s=POSTGRES_OUTAGE_S,
        **ended,
        **spool,
        lookups={k: v[0] for k, v in lookups.items()},
        pin_changed_while_feed_down={"feed_down": feed_down, "honoured_after_s": honoured_after_s},
    )
    assert load.summary()["failed"] == 0 and load.fallbacks == 0, load.summary()
    assert not load.ending_failures and len(load.ended) == len(load.answered), load.summary()
    assert during > 0 and spool["spooled"] > 0 and spool["dropped"] == 0
    assert retried is not None and retried["call_id"] == load.answered[spooled_sid]
    assert recorded["recorded"] == len(load.answered)
    assert recorded["missing"] == recorded["duplicated"] == recorded["mismatched"] == 0
    assert ended == {"ended_right": len(load.ended), "not_ended": 0, "wrong_duration": 0}
    assert warm[0] == 200
    assert lookups["call_config"] == (
        200,
        {**warm[1], "call_id": retried["call_id"], "config_hash": retried["config_hash"]},
    )
    assert lookups["config_blob"] == (200, warm[1]["config"])
    assert lookups["never_seen_token"][0] == 503
    assert feed_down


def _config_path(call_id: str) -> str:
    return f"/v1/calls/{call_id}/config"


async def _lookups(caller: Caller, rig: Rig, call_id: str) -> dict[str, tuple[int, Any]]:
    """The voice agent's lookups for a call answered during the outage: its config, the config
    blob by hash (both with a token validated before the outage), and one with a token this
    worker never saw (which it cannot check)."""
    config = await caller.lookup(_config_path(call_id), rig.runtime_token)
    digest = config[1].get("config_hash", "")
    return {
        "call_config": config,
        "config_blob": await caller.lookup(f"/v1/configs/{digest}", rig.runtime_token),
        "never_seen_token": await caller.lookup(
            _config_path(call_id), "agv_never-seen-" + secrets.token_hex(8)
        ),
    }


async def _repin_while_feed_is_down(rig: Rig) -> None:
    """Re-pin through the stopped cluster started on a port no router knows, so the routers'
    feeds, retrying on the real port, cannot reconnect before the change commits."""
    aside = PostgresServer(rig.postgres.pgdata)
    aside.start()
    try:
        pool = await create_pool(aside.url, min_size=1, max_size=1)
        try:
            await pin_channel(pool, PINNED_LATER, rig.agent_id, 2)
        finally:
            await pool.close()
    finally:
        aside.stop()


MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")


@pytest.fixture
def migrate_requests() -> Iterator[None]:
    """What a deployment sets for rolling restarts behind SO_REUSEPORT: connections still in a
    closing worker's accept queue move to a sibling listener instead of being reset."""
    if not os.access(MIGRATE_REQ, os.W_OK):
        pytest.skip(f"{MIGRATE_REQ} needs root: the kernel would reset queued connections")
    before = MIGRATE_REQ.read_text()
    MIGRATE_REQ.write_text("1")
    yield
    MIGRATE_REQ.write_text(before)


@pytest.mark.usefixtures("migrate_requests")
async def test_rolling_restart_of_two_workers(rig: Rig, routers: list[RouterProcess]) -> None:
    port = free_port()
    routers.extend([rig.router(port, "worker-a"), rig.router(port, "worker-b")])
    exits = []
    async with session() as client, loaded(Caller(client, port, CHANNEL)) as load:
        await asyncio.sleep(WARM_UP_S)
        fault_began = time.monotonic()
        for index in range(2):
            # Replace each worker in turn: the new one shares the port before the old one goes.
            old = routers[index]
            routers.append(await asyncio.to_thread(rig.router, port, f"worker-{index}-new"))
            exits.append(await asyncio.to_thread(old.terminate))
            await asyncio.sleep(WARM_UP_S)
        fault_ended = time.monotonic()
    recorded = await count_recorded(rig, load)
    report("rolling_restart", load, recorded, (fault_began, fault_ended), exit_codes=exits)
    assert exits == [0, 0]
    assert load.summary()["failed"] == 0 and load.fallbacks == 0, load.summary()
    assert recorded["missing"] == recorded["duplicated"] == recorded["mismatched"] == 0
    assert TWILIO_TOKEN not in rig.logs()

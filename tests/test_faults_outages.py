"""Faults under load, against real router processes and a Redis and Postgres of the module's
own: Redis killed for 10 s, Postgres stopped for 30 s, a rolling restart by SIGTERM. No webhook
may fail, every answered call must land in Postgres exactly once (and, through the Postgres
outage, be ended once with the duration its status callback gave), a voice agent's lookups must
be answered through the outage, and a pin changed while the change feed was down must be
honoured. Each test prints its counts as one JSON line (-s)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from harness.net import free_port
from harness.postgres import PostgresServer, ensure_database
from harness.redis import RedisServer
from store.agents import create_agent, publish, update_draft
from store.channels import Variant, set_channel
from store.db import create_pool
from store.migrate import migrate
from store.tokens import create_token
from tests.conftest import minimal_config
from tests.faults import TWILIO_TOKEN, Caller, Load, RouterProcess, loaded, session
from tests.polling import eventually

pytestmark = pytest.mark.faults

CHANNEL = "+14155550100"
PINNED_LATER = "+14155550199"  # pinned to v1, then to v2 while the change feed is down
REDIS_OUTAGE_S = 10.0
POSTGRES_OUTAGE_S = 30.0
WARM_UP_S = 2.0
# Seconds after Postgres returns for every spooled call to be replayed (one replay a second).
REPLAY_WITHIN_S = 15.0
FEED_CONNECTED = "agentver_change_feed_connected"


@dataclass
class Rig:
    workdir: Path
    postgres: PostgresServer
    redis: RedisServer
    agent_id: str
    runtime_token: str  # the voice agent's

    def env(self, port: int, spool: str = "spool") -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url,
            "AGENTVER_ROUTER_PORT": str(port),
            "AGENTVER_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "AGENTVER_SPOOL_DIR": str(self.workdir / spool),
        }

    def router(self, port: int, name: str) -> RouterProcess:
        return RouterProcess(self.env(port), self.workdir / f"{name}.log")

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.workdir.glob("*.log"))


async def _seed(url: str) -> tuple[str, str]:
    """Create and migrate the database; the agent's id and a runtime token."""
    await ensure_database(url)
    await migrate(url)
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        agent = await create_agent(pool, minimal_config(), "faults")
        await publish(pool, agent.id, "v1", "", "faults")
        await update_draft(pool, agent.id, lambda _: minimal_config(system_prompt="Two."), "faults")
        await publish(pool, agent.id, "v2", "", "faults")
        for number in (CHANNEL, PINNED_LATER):
            await _pin(pool, number, agent.id, 1)
        return agent.id, await create_token(pool, "faults-voice-agent", "runtime")
    finally:
        await pool.close()


async def _pin(pool: asyncpg.Pool, number: str, agent_id: str, version: int) -> None:
    await set_channel(pool, number, (Variant("v", agent_id, version, 100),), "caller", "faults")


@pytest.fixture(scope="module")
async def rig() -> AsyncIterator[Rig]:
    # Not pytest's tmp_path: as root, Postgres runs as `nobody`, who must reach its directory.
    workdir = Path(tempfile.mkdtemp(prefix="agentver-faults-"))
    os.chmod(workdir, 0o755)  # noqa: S103 (directories need o+x to be searched)
    postgres, redis = PostgresServer(workdir / "postgres"), RedisServer(workdir / "redis")
    try:
        postgres.init()
        postgres.start()
        redis.start()
        yield Rig(workdir, postgres, redis, *await _seed(postgres.url))
    finally:
        redis.kill()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def routers(rig: Rig) -> Iterator[list[RouterProcess]]:
    """Router processes a test starts; killed after it if still running."""
    started: list[RouterProcess] = []
    yield started
    for router in started:
        router.kill()


async def _recorded(rig: Rig, load: Load) -> dict[str, Any]:
    """How the answered calls landed: missing, duplicated, or with another call_id."""
    conn = await asyncpg.connect(rig.postgres.url)
    try:
        rows = await conn.fetch(
            "SELECT provider_call_id, call_id FROM calls WHERE provider_call_id = ANY($1)",
            list(load.answered),
        )
    finally:
        await conn.close()
    stored: dict[str, list[str]] = {}
    for row in rows:
        stored.setdefault(row["provider_call_id"], []).append(row["call_id"])
    return {
        "recorded": len(stored),
        "missing": sum(1 for sid in load.answered if sid not in stored),
        "duplicated": sum(1 for ids in stored.values() if len(ids) > 1),
        "mismatched": sum(1 for sid, ids in stored.items() if ids != [load.answered[sid]]),
    }


async def _ended(rig: Rig, load: Load) -> dict[str, Any]:
    """How the endings sent landed: calls still open, or ended with another duration."""
    conn = await asyncpg.connect(rig.postgres.url)
    try:
        rows = await conn.fetch(
            "SELECT provider_call_id, status, duration_s FROM calls"
            " WHERE provider_call_id = ANY($1)",
            list(load.ended),
        )
    finally:
        await conn.close()
    right = {r["provider_call_id"] for r in rows if r["status"] == "completed"}
    wrong = {
        r["provider_call_id"] for r in rows if r["duration_s"] != load.ended[r["provider_call_id"]]
    }
    return {
        "ended_right": len(right - wrong),
        "not_ended": len(load.ended) - len(right),
        "wrong_duration": len(wrong),
    }


async def _landed(rig: Rig, load: Load) -> tuple[dict[str, Any], dict[str, Any]]:
    return await _recorded(rig, load), await _ended(rig, load)


async def _metric(port: int, name: str) -> float:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def _report(test: str, **figures: Any) -> None:
    print(json.dumps({"test": test, **figures}))


async def test_redis_killed_for_10_s(rig: Rig, routers: list[RouterProcess]) -> None:
    port = free_port()
    routers.append(rig.router(port, "redis-outage"))
    async with session() as client:
        caller = Caller(client, port, CHANNEL)
        async with loaded(caller) as load:
            await asyncio.sleep(WARM_UP_S)
            before = load.sent
            rig.redis.kill()
            await asyncio.sleep(REDIS_OUTAGE_S)
            during = load.sent - before
            rig.redis.start()
            await asyncio.sleep(WARM_UP_S)
    recorded = await _recorded(rig, load)
    _report("redis_killed", outage_s=REDIS_OUTAGE_S, during_outage=during, **load.summary())
    _report("redis_killed_records", **recorded)
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
            before = load.sent
            rig.postgres.stop()
            # A fast shutdown ends the feed's session: the worker notices at once.
            await eventually(lambda: _metric(port, FEED_CONNECTED), lambda v: v == 0)
            await asyncio.sleep(POSTGRES_OUTAGE_S / 2)
            # A provider retry of a spooled call gets the answer the call got.
            spooled_sid = next(reversed(load.answered))
            retried = await caller.call(spooled_sid)
            # Past the token cache's TTL, with Postgres out of reach.
            lookups = await _lookups(caller, rig, load.answered[spooled_sid])
            await asyncio.sleep(POSTGRES_OUTAGE_S / 2)
            during = load.sent - before
            rig.postgres.start()
            await _repin_while_feed_is_down(rig)
            # Read after the re-pin's commit: still down means it was committed while down (the
            # feed retries every few seconds by now, store/feed.py RECONNECT_MAX_S).
            feed_down = await _metric(port, FEED_CONNECTED) == 0
            await asyncio.sleep(WARM_UP_S)
        honoured_after_s = await _serves_version(caller, PINNED_LATER, "2")
    recorded, ended = await eventually(
        lambda: _landed(rig, load),
        lambda landed: not landed[0]["missing"] and not landed[1]["not_ended"],
        within_s=REPLAY_WITHIN_S,
        interval_s=0.5,
    )
    spool = {
        event: await _metric(port, f'agentver_spool_records_total{{event="{event}"}}')
        for event in ("spooled", "replayed", "dropped")
    }
    _report("postgres_stopped", outage_s=POSTGRES_OUTAGE_S, during_outage=during, **load.summary())
    _report("postgres_stopped_records", **recorded, **ended, **spool)
    _report("postgres_stopped_lookups", **{k: v[0] for k, v in lookups.items()})
    _report("pin_changed_while_feed_down", feed_down=feed_down, honoured_after_s=honoured_after_s)
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
    pool = await create_pool(rig.postgres.url, min_size=1, max_size=1)
    try:
        await _pin(pool, PINNED_LATER, rig.agent_id, 2)
    finally:
        await pool.close()


async def _serves_version(caller: Caller, to: str, version: str, within_s: float = 10.0) -> float:
    """Seconds until calls to `to` are served `version`."""
    started = time.monotonic()
    await eventually(
        lambda: caller.call(f"CA-probe-{time.monotonic_ns()}", to=to),
        lambda answer: answer is not None and answer["version"] == version,
        within_s=within_s,
        interval_s=0.1,
    )
    return round(time.monotonic() - started, 3)


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
        for index in range(2):
            # Replace each worker in turn: the new one shares the port before the old one goes.
            old = routers[index]
            routers.append(await asyncio.to_thread(rig.router, port, f"worker-{index}-new"))
            exits.append(await asyncio.to_thread(old.terminate))
            await asyncio.sleep(WARM_UP_S)
    recorded = await _recorded(rig, load)
    _report("rolling_restart", exit_codes=exits, **load.summary(), **recorded)
    assert exits == [0, 0]
    assert load.summary()["failed"] == 0 and load.fallbacks == 0, load.summary()
    assert recorded["missing"] == recorded["duplicated"] == recorded["mismatched"] == 0
    assert TWILIO_TOKEN not in rig.logs()

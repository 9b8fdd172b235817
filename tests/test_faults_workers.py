"""Faults of workers, against real router processes and a Redis and Postgres of the module's own:
one of two workers sharing a port SIGKILLed under load (with Postgres up; then with Postgres
stopped, so both spool, its spool replayed by the survivor or by a replacement), and provider
retries reaching another router while the call is spooled (answered from the claim in Redis),
or while Redis is down too, or after the call was committed (what remains, docs/design.md
section 6). Each scenario prints its counts as one JSON line (-s)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from harness.net import free_port
from harness.proxy import TcpProxy
from tests.faults import (
    CHANNEL,
    Caller,
    Load,
    Rig,
    RouterProcess,
    count_recorded,
    loaded,
    report,
    scrape_metric,
    session,
)
from tests.polling import eventually
from tests.router_fixtures import stream_parameters

pytestmark = pytest.mark.faults

# Calls the load keeps in flight: all of them may be on the killed worker, no more.
CONCURRENCY = 4
WARM_UP_S = 2.0
# Seconds after Postgres returns for every spooled call to be replayed (one replay a second).
REPLAY_WITHIN_S = 15.0
# Answered calls a scenario retries on another worker during the outage, as a provider would.
RETRIES = 20
# What the client sees of a call in flight on a worker that died: the provider retries these.
DISCONNECTS = {"ServerDisconnectedError", "ClientOSError", "ClientConnectorError"}
REPLAYED = 'agentver_spool_records_total{event="replayed"}'
SPOOLED = 'agentver_spool_records_total{event="spooled"}'


def _failed(load: Load) -> int:
    return sum(load.failures.values())


def _assert_only_the_killed_in_flight_failed(load: Load, failed_at_kill: int) -> None:
    """No fallback, and no failure but the disconnects of calls in flight on the killed worker:
    there are at most as many as the load keeps in flight."""
    assert load.fallbacks == 0 and _failed(load) == failed_at_kill <= CONCURRENCY, load.summary()
    assert set(load.failures) <= DISCONNECTS, load.failures


def _assert_landed_once(load: Load, recorded: dict[str, int]) -> None:
    """Every answered call recorded once, with the call id it was answered."""
    assert recorded["recorded"] == len(load.answered)
    assert recorded["missing"] == recorded["duplicated"] == recorded["mismatched"] == 0


def _segments(spool: Path, pid: int | None = None) -> list[Path]:
    """Spool segments in `spool` (of process `pid`, named `<time>-<pid>.spool`), non-empty."""
    pattern = f"*-{pid}.spool" if pid else "*.spool"
    return [p for p in spool.glob(pattern) if p.stat().st_size]


def _served_by(rig: Rig, name: str) -> int:
    """Calls the router logging to `name`.log answered."""
    return (rig.workdir / f"{name}.log").read_text(errors="replace").count("call_routed")


async def _retry(caller: Caller, load: Load) -> dict[str, str | None]:
    """Send the first RETRIES answered calls again, as a provider's retries: the call id each
    gets (None for the fallback)."""
    retried = {}
    for sid in list(load.answered)[:RETRIES]:
        answer = await caller.call(sid)
        retried[sid] = answer["call_id"] if answer else None
    return retried


def _mismatches(load: Load, retried: dict[str, str | None]) -> int:
    """Retries answered otherwise than the call was first."""
    return sum(1 for sid, call_id in retried.items() if call_id != load.answered[sid])


async def _stored(rig: Rig, sids: list[str]) -> dict[str, list[str]]:
    """The call ids recorded for each provider call id."""
    conn = await asyncpg.connect(rig.postgres.url)
    try:
        rows = await conn.fetch(
            "SELECT provider_call_id, call_id FROM calls WHERE provider_call_id = ANY($1)", sids
        )
    finally:
        await conn.close()
    stored: dict[str, list[str]] = {sid: [] for sid in sids}
    for row in rows:
        stored[row["provider_call_id"]].append(row["call_id"])
    return stored


async def _landed(rig: Rig, load: Load) -> dict[str, int]:
    """The answered calls' records once the spool has been replayed (none missing)."""
    recorded: dict[str, int] = await eventually(
        lambda: count_recorded(rig, load),
        lambda counts: not counts["missing"],
        within_s=REPLAY_WITHIN_S,
        interval_s=0.5,
    )
    return recorded


async def _kill_one_of_two(routers: list[RouterProcess], load: Load) -> tuple[float, float, int]:
    """SIGKILL the first worker mid-load, let the survivor serve alone a while: the fault
    window, and the calls that failed within it."""
    await asyncio.sleep(WARM_UP_S)
    failed_before, began = _failed(load), time.monotonic()
    await asyncio.to_thread(routers[0].kill)
    await asyncio.sleep(WARM_UP_S)
    return began, time.monotonic(), _failed(load) - failed_before


async def test_sigkill_one_of_two_workers_under_load(
    rig: Rig, routers: list[RouterProcess]
) -> None:
    port = free_port()
    routers.extend([rig.router(port, "kill-a"), rig.router(port, "kill-b")])
    async with session() as client, loaded(Caller(client, port, CHANNEL), CONCURRENCY) as load:
        began, ended, failed = await _kill_one_of_two(routers, load)
        answered_after = len(load.answered)
        await asyncio.sleep(WARM_UP_S)
        answered_after = len(load.answered) - answered_after
    recorded = await count_recorded(rig, load)
    killed_served = _served_by(rig, "kill-a")
    report(
        "sigkill_one_of_two",
        load,
        recorded,
        (began, ended),
        failed_at_kill=failed,
        failures=dict(load.failures),
        killed_worker_served=killed_served,
    )
    assert killed_served > 0 and answered_after > 0
    _assert_only_the_killed_in_flight_failed(load, failed)
    _assert_landed_once(load, recorded)


@pytest.mark.parametrize("replayer", ["survivor", "replacement"])
async def test_sigkill_while_spooling(
    rig: Rig, routers: list[RouterProcess], replayer: str
) -> None:
    """Postgres stopped before the load (no batch in flight at its shutdown: that transition is
    tested on its own), so both workers spool; one is SIGKILLed with its segment full of
    answered calls. Its segments, unlocked by its death, are replayed by the survivor once
    Postgres is back, or, the survivor SIGKILLed too, by a replacement at its start."""
    port, spool = free_port(), f"spool-kill-{replayer}"
    spool_dir = rig.workdir / spool
    routers.extend(
        [
            rig.router(port, f"{replayer}-a", spool=spool),
            rig.router(port, f"{replayer}-b", spool=spool),
        ]
    )
    rig.postgres.stop()
    try:
        async with session() as client:
            caller = Caller(client, port, CHANNEL)
            async with loaded(caller, CONCURRENCY) as load:
                killed_pid = routers[0].proc.pid
                began, ended, failed = await _kill_one_of_two(routers, load)
            killed_segments = len(_segments(spool_dir, killed_pid))
            # Retries of calls answered by either worker, now all reaching the survivor.
            retry_mismatches = _mismatches(load, await _retry(caller, load))
            if replayer == "replacement":
                await asyncio.to_thread(routers[1].kill)
    finally:
        rig.postgres.start()
    if replayer == "replacement":
        routers.append(await asyncio.to_thread(rig.router, port, "replacement", spool=spool))
    recorded = await _landed(rig, load)
    await eventually(lambda: asyncio.to_thread(_segments, spool_dir), lambda left: not left)
    replayed = await scrape_metric(port, REPLAYED)
    report(
        f"sigkill_while_spooling_replayed_by_{replayer}",
        load,
        recorded,
        (began, ended),
        failed_at_kill=failed,
        failures=dict(load.failures),
        killed_worker_segments=killed_segments,
        retried=min(RETRIES, len(load.answered)),
        retry_mismatches=retry_mismatches,
        replayed_by_the_live_worker=replayed,
    )
    assert killed_segments > 0
    _assert_only_the_killed_in_flight_failed(load, failed)
    assert retry_mismatches == 0
    _assert_landed_once(load, recorded)
    # The replacement replayed every answered call (and any whose answer the kill cut off); the
    # survivor at least the dead worker's.
    if replayer == "replacement":
        assert len(load.answered) <= replayed <= len(load.answered) + failed
    assert replayed > 0


async def _two_routers(rig: Rig, routers: list[RouterProcess], name: str) -> tuple[int, int]:
    """Routers A and B on ports and spools of their own, sharing Postgres and Redis: their
    ports."""
    ports = free_port(), free_port()
    for port, worker in zip(ports, "ab", strict=True):
        routers.append(
            await asyncio.to_thread(rig.router, port, f"{name}-{worker}", spool=f"{name}-{worker}")
        )
    return ports


async def test_a_retry_on_another_router_gets_the_spooled_answer(
    rig: Rig, routers: list[RouterProcess]
) -> None:
    """Two routers on their own ports and spools, sharing Postgres and Redis: calls spooled by
    router A while Postgres is stopped, retried on router B, get A's answer (the claim in
    Redis), and land once, with that call id."""
    port_a, port_b = await _two_routers(rig, routers, "claim")
    sid = f"CA-claimed-{time.monotonic_ns()}"
    rig.postgres.stop()
    try:
        async with session() as client:
            caller_a, caller_b = Caller(client, port_a, CHANNEL), Caller(client, port_b, CHANNEL)
            async with loaded(caller_a, CONCURRENCY) as load:
                began = time.monotonic()
                first, retry = await caller_a.voice(sid), await caller_b.voice(sid)
                await asyncio.sleep(WARM_UP_S)
                retry_mismatches = _mismatches(load, await _retry(caller_b, load))
                ended = time.monotonic()
    finally:
        rig.postgres.start()
    recorded = await _landed(rig, load)
    spooled_by_b = await scrape_metric(port_b, SPOOLED)
    stored = await _stored(rig, [sid])
    report(
        "retry_on_another_router_while_spooled",
        load,
        recorded,
        (began, ended),
        retried=min(RETRIES, len(load.answered)) + 1,
        retry_mismatches=retry_mismatches + (retry != first),
        spooled_by_b=spooled_by_b,
    )
    assert "<Stream" in first and retry == first
    assert stored == {sid: [stream_parameters(first)["call_id"]]}
    assert spooled_by_b == 0
    assert retry_mismatches == 0
    assert load.fallbacks == 0 and _failed(load) == 0, load.summary()
    assert recorded["missing"] == recorded["duplicated"] == recorded["mismatched"] == 0


async def test_what_remains_with_redis_down_too(rig: Rig, routers: list[RouterProcess]) -> None:
    """Redis and Postgres both down: no claim can be taken, so a retry on another router is
    spooled there under a new call id. After recovery each call has one record, with the call
    id of whichever spool was replayed first (docs/design.md section 6)."""
    port_a, port_b = await _two_routers(rig, routers, "both-down")
    rig.redis.kill()
    rig.postgres.stop()
    try:
        async with session() as client:
            async with loaded(Caller(client, port_a, CHANNEL), CONCURRENCY) as load:
                began = time.monotonic()
                await asyncio.sleep(WARM_UP_S)
            retried = await _retry(Caller(client, port_b, CHANNEL), load)
            ended = time.monotonic()
    finally:
        rig.postgres.start()
        rig.redis.start()
    recorded = await _landed(rig, load)
    stored = await _stored(rig, list(retried))
    report(
        "retry_on_another_router_with_redis_down_too",
        load,
        recorded,
        (began, ended),
        retried=len(retried),
        retry_mismatches=_mismatches(load, retried),
    )
    assert load.fallbacks == 0 and _failed(load) == 0, load.summary()
    assert None not in retried.values() and _mismatches(load, retried) == len(retried)
    assert all(ids in ([load.answered[sid]], [retried[sid]]) for sid, ids in stored.items())
    assert recorded["missing"] == recorded["duplicated"] == 0


async def test_what_remains_for_a_retry_of_a_committed_call(
    rig: Rig, routers: list[RouterProcess]
) -> None:
    """Calls committed by router A, then Postgres stopped: their retries on router B find no
    claim (only spooled calls take one) and are spooled under new call ids, which the replay
    does not insert: each call keeps its one committed record (docs/design.md section 6)."""
    port_a, port_b = await _two_routers(rig, routers, "committed")
    async with session() as client:
        async with loaded(Caller(client, port_a, CHANNEL), CONCURRENCY) as load:
            await asyncio.sleep(WARM_UP_S)
        rig.postgres.stop()
        try:
            began = time.monotonic()
            retried = await _retry(Caller(client, port_b, CHANNEL), load)
            ended = time.monotonic()
        finally:
            rig.postgres.start()
    replayed = await eventually(
        lambda: scrape_metric(port_b, REPLAYED),
        lambda n: n == len(retried),
        within_s=REPLAY_WITHIN_S,
        interval_s=0.5,
    )
    recorded = await count_recorded(rig, load)
    report(
        "retry_of_a_committed_call_on_another_router",
        load,
        recorded,
        (began, ended),
        retried=len(retried),
        retry_mismatches=_mismatches(load, retried),
        replayed_by_b=replayed,
    )
    assert load.fallbacks == 0 and _failed(load) == 0, load.summary()
    assert None not in retried.values() and _mismatches(load, retried) == len(retried)
    _assert_landed_once(load, recorded)


# Seconds Redis is partitioned while Postgres is down: several of the breaker's probes.
PARTITION_S = 5.0
# The provider's budget during a fault (issue 13): p99 and worst answer time, in ms.
P99_BUDGET_MS, MAX_BUDGET_MS = 1000.0, 5000.0


async def test_redis_partitioned_while_spooling(rig: Rig, routers: list[RouterProcess]) -> None:
    """What claiming costs when Redis stops answering (packets dropped, not refused) while
    Postgres is down: each claim waits out the Redis timeout until the breaker opens, then one
    probe a second does. Calls stay within the provider's budget, and land once."""
    port = free_port()
    with TcpProxy(rig.redis.port) as proxy:
        routers.append(
            await asyncio.to_thread(
                rig.router,
                port,
                "claims-partitioned",
                spool="claims-partitioned",
                REDIS_URL=proxy.through(rig.redis.url),
            )
        )
        rig.postgres.stop()
        try:
            async with session() as client:
                caller = Caller(client, port, CHANNEL)
                async with loaded(caller, CONCURRENCY) as load:
                    await asyncio.sleep(WARM_UP_S)
                    began = time.monotonic()
                    proxy.partition()
                    await asyncio.sleep(PARTITION_S)
                    ended = time.monotonic()
                    proxy.heal()
                    await asyncio.sleep(WARM_UP_S)
                retry_mismatches = _mismatches(load, await _retry(caller, load))
        finally:
            rig.postgres.start()
    recorded = await _landed(rig, load)
    figures = report(
        "redis_partitioned_while_spooling",
        load,
        recorded,
        (began, ended),
        partition_s=PARTITION_S,
        retry_mismatches=retry_mismatches,
    )
    assert load.fallbacks == 0 and _failed(load) == 0, load.summary()
    assert figures["p99_ms_during_fault"] < P99_BUDGET_MS
    assert figures["max_ms_during_fault"] < MAX_BUDGET_MS
    assert retry_mismatches == 0
    _assert_landed_once(load, recorded)

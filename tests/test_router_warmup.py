"""The routing warm-up: a worker loads every channel's routing into L1 before it trusts its
cache, without missing a change committed while it loads."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from structlog.testing import capture_logs

from router.keys import RESOLVER, SNAPSHOTS
from store import channels
from store.channels import Routing
from tests.conftest import AgentFactory, Api
from tests.polling import eventually
from tests.router_fixtures import CHANNEL, RouterFactory, pin, postgres_loads


async def test_started_worker_resolves_existing_channels_without_a_read(
    make_pinned_agent: AgentFactory, start_router: RouterFactory
) -> None:
    await make_pinned_agent(versions=1, pinned=1)

    router = await start_router()

    routing = await router.app[RESOLVER].routing(CHANNEL)
    assert routing is not None and routing.variants[0].version == 1
    assert router.app[SNAPSHOTS].mutable_l1_size() == 1
    assert postgres_loads(router, "routing") == 0


async def test_change_committed_during_warm_up_is_not_lost(
    api: Api,
    make_pinned_agent: AgentFactory,
    start_router: RouterFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent = await make_pinned_agent(versions=2, pinned=1)
    real = channels.all_routings
    repinned = False

    async def racing(conn: asyncpg.Connection) -> AsyncIterator[Routing]:
        """The real stream, then a re-pin committed after it read version 1."""
        nonlocal repinned
        async for routing in real(conn):
            yield routing
        if not repinned:
            repinned = True
            await pin(api, {"agent_id": agent["id"], "version": 2})

    monkeypatch.setattr(channels, "all_routings", racing)
    router = await start_router()
    assert repinned

    async def on_v2() -> bool:
        routing = await router.app[RESOLVER].routing(CHANNEL)
        return routing is not None and routing.variants[0].version == 2

    await eventually(on_v2)


async def test_a_warm_up_cut_off_by_postgres_keeps_what_it_read_and_says_why(
    make_pinned_agent: AgentFactory, start_router: RouterFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Postgres' error reaches the resolver (compiled: scripts/compile) from an awaited query
    in the middle of the stream, intact, and the routings read before it stay loaded."""
    await make_pinned_agent(versions=1, pinned=1)
    router = await start_router()
    real = channels.all_routings

    async def cut_off(conn: asyncpg.Connection) -> AsyncIterator[Routing]:
        async for routing in real(conn):
            yield routing
        await conn.fetchval("SELECT 1 / 0")

    monkeypatch.setattr(channels, "all_routings", cut_off)
    with capture_logs() as logs:
        assert await router.app[RESOLVER].warm() is False

    [failed] = [e for e in logs if e["event"] == "routing_warmup_failed"]
    assert (failed["error"], failed["loaded"]) == ("DivisionByZeroError", 1)
    assert (await router.app[RESOLVER].routing(CHANNEL)) is not None
    assert postgres_loads(router, "routing") == 0

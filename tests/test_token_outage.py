"""A token revoked before a Postgres outage stays refused through it: the router remembers the
revocation the change feed pushed, so stale-if-error never accepts it, while a token still valid
is accepted stale. On a dedicated Postgres that the test really stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from httpkit.token_cache import TOKEN_TTL_S
from router.app import create_app
from router.keys import FEED
from store.db import create_pool
from store.settings import Settings
from store.tokens import issue_token, revoke_token
from tests.faults import CHANNEL, Rig
from tests.polling import eventually

RESOLVE = f"/v1/resolve?to={CHANNEL.replace('+', '%2B')}"


@pytest.fixture
async def router_on_rig(
    rig: Rig, tmp_path: Path
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    settings = Settings(
        database_url=rig.postgres.url,
        redis_url=rig.redis.url,
        redis_prefix="agentver-token-outage:",
        spool_dir=tmp_path / "spool",
    )
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    yield client
    await client.close()


async def test_a_token_revoked_before_the_outage_is_refused_through_it(
    rig: Rig, router_on_rig: TestClient[web.Request, web.Application]
) -> None:
    router = router_on_rig
    pool = await create_pool(rig.postgres.url, min_size=1, max_size=2)
    try:
        kept, _ = await issue_token(pool, "kept", "runtime")
        doomed, doomed_token = await issue_token(pool, "doomed", "runtime")
    finally:
        await pool.close()

    async def status(secret: str) -> int:
        resp = await router.get(RESOLVE, headers={"Authorization": f"Bearer {secret}"})
        return resp.status

    assert router.app[FEED].connected.is_set()
    assert [await status(kept), await status(doomed)] == [200, 200]  # both cached now
    pool = await create_pool(rig.postgres.url, min_size=1, max_size=2)
    try:
        await revoke_token(pool, doomed_token.id, "test")
    finally:
        await pool.close()
    await eventually(lambda: status(doomed), lambda s: s == 401)

    await asyncio.to_thread(rig.postgres.stop)
    try:
        # Past the token cache's TTL: only stale-if-error can accept a token now.
        await asyncio.sleep(TOKEN_TTL_S + 0.5)
        assert not router.app[FEED].connected.is_set()
        assert await status(kept) == 200
        assert await status(doomed) == 401
        assert await status("agv_never-seen") == 503  # may be valid: cannot be checked
    finally:
        await asyncio.to_thread(rig.postgres.start)

"""Fixtures: a fresh database per test run, clean tables per test, an admin API client with a
token per role, and factories for agents, versions and channels' variants."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from admin.app import create_app
from harness.postgres import scratch_database
from store.db import create_pool
from store.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL, Settings
from store.tokens import ROLES, create_token

pytest_plugins = ["tests.router_fixtures", "tests.faults"]

# Every table the migrations made (whoever wrote them), bar the migration ledger and the rollups'
# horizon (its one row must stay, and its value holds for an empty `calls`). Tests may wipe
# published versions: replica mode skips the immutability and foreign-key triggers, which only a
# superuser can do and which the service never does. DELETE, not TRUNCATE: on tables this small
# it takes ~10 ms where TRUNCATE's file work takes ~350 ms, and it runs before every test.
WIPE = """
SET session_replication_role = replica;
DO $$ DECLARE t text; BEGIN
    FOR t IN SELECT tablename FROM pg_tables
             WHERE schemaname = 'public'
               AND tablename NOT IN ('schema_migrations', 'call_rollup_horizon') LOOP
        EXECUTE format('DELETE FROM %I', t);
    END LOOP;
END $$;
RESET session_replication_role
"""

ROOT = Path(__file__).resolve().parent.parent


def stale_extensions(root: Path) -> list[str]:
    """The extension modules under `root`'s packages (scripts/compile) older than the source
    beside them: Python imports the extension, so an edited module would run its old code."""
    return [
        str(extension.relative_to(root))
        for extension in sorted(root.glob("*/*.so"))
        if (source := extension.with_name(extension.name.split(".")[0] + ".py")).exists()
        and source.stat().st_mtime > extension.stat().st_mtime
    ]


def pytest_sessionstart(session: pytest.Session) -> None:
    stale = stale_extensions(ROOT)
    if stale:
        listed = ", ".join(stale)
        pytest.exit(f"compiled before their sources changed: {listed}; run make compiled", 2)


def minimal_config(**overrides: Any) -> dict[str, Any]:
    """The smallest valid configuration, with `overrides` on top."""
    config: dict[str, Any] = {
        "name": "Support bot",
        "system_prompt": "You are a helpful support agent.",
        "llm": {"provider": "openai", "model": "gpt-4o-mini"},
        "voice": {"tts_provider": "elevenlabs", "tts_voice": "rachel"},
    }
    config.update(overrides)
    return config


def variant(agent: dict[str, Any], label: str, version: int | None, weight: int) -> dict[str, Any]:
    """One variant of a channel's routing: `agent`'s `version` (None: its draft)."""
    return {"label": label, "agent_id": agent["id"], "version": version, "weight": weight}


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A database of its own for this test run, built from the migrations, dropped after."""
    server = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    async with scratch_database(server, "test") as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
        redis_prefix=f"agentver-test-{secrets.token_hex(6)}:",
        twilio_auth_token="twilio-test-auth-token",
        generic_secret="generic-test-secret",
        # Tests move rollouts with their own clock (store.rollouts.tick), not a background one,
        # and compact the rollups when they mean to (store.rollups.compact).
        rollout_tick_s=0,
        rollup_compact_s=0,
    )


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url)
    yield pool
    await pool.close()


@pytest.fixture(autouse=True)
async def clean_tables(pool: asyncpg.Pool) -> None:
    await pool.execute(WIPE)


class Api:
    """An admin API client that sends a token of the chosen role."""

    def __init__(self, client: TestClient[Any, Any], tokens: dict[str, str]) -> None:
        self.client = client
        self.tokens = tokens

    def bearer(self, role: str) -> dict[str, str]:
        """The header that sends `role`'s token, to this API or to a router's."""
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    async def call(
        self,
        method: str,
        path: str,
        *,
        role: str | None = "admin",
        json: Any = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> ClientResponse:
        sent = dict(headers or {})
        if role is not None:
            sent = {**self.bearer(role), **sent}
        return await self.client.request(method, path, json=json, headers=sent, **kwargs)

    async def ok(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        """Call and assert the status; returns the JSON body (None for 204)."""
        resp = await self.call(method, path, **kwargs)
        body = await resp.json() if resp.status != 204 else None
        assert resp.status == status, (resp.status, body)
        return body


@pytest.fixture
async def api(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Api]:
    tokens = {role: await create_token(pool, f"{role}-user", role) for role in ROLES}
    client: TestClient[Any, Any] = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    yield Api(client, tokens)
    await client.close()


AgentFactory = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def make_agent(api: Api) -> AgentFactory:
    """Create an agent through the API, optionally publishing `versions` snapshots of it."""

    async def make(versions: int = 0, **config: Any) -> dict[str, Any]:
        agent: dict[str, Any] = await api.ok(
            "POST", "/v1/agents", 201, json={"config": minimal_config(**config)}
        )
        for n in range(1, versions + 1):
            await api.ok(
                "PATCH",
                f"/v1/agents/{agent['id']}/draft",
                json={"config": {"system_prompt": f"Prompt of version {n}."}},
            )
            await api.ok("POST", f"/v1/agents/{agent['id']}/versions", 201, json={"name": f"v{n}"})
        return agent

    return make

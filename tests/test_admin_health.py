"""The admin service's /healthz and /readyz, against a dedicated Postgres that the test stops."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from admin.app import create_app
from harness.postgres import PostgresServer, ensure_database
from store.migrate import migrate
from store.settings import Settings


@pytest.fixture
async def postgres() -> AsyncIterator[PostgresServer]:
    # Not pytest's tmp_path: as root, Postgres runs as `nobody`, who must reach its directory.
    workdir = Path(tempfile.mkdtemp(prefix="agentver-admin-health-"))
    os.chmod(workdir, 0o755)  # noqa: S103 (directories need o+x to be searched)
    server = PostgresServer(workdir / "postgres")
    try:
        server.init()
        server.start()
        await ensure_database(server.url)
        await migrate(server.url)
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def test_readyz_follows_postgres_and_healthz_only_the_process(
    postgres: PostgresServer, settings: Settings
) -> None:
    app = create_app(dataclasses.replace(settings, database_url=postgres.url))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:

        async def probe(path: str) -> tuple[int, Any]:
            resp = await client.get(path)  # no token: probes are unauthenticated
            return resp.status, await resp.json()

        assert await probe("/healthz") == (200, {"status": "ok"})
        assert await probe("/readyz") == (200, {"status": "ready", "degraded": []})
        postgres.stop()
        assert await probe("/readyz") == (503, {"status": "degraded", "degraded": ["postgres"]})
        assert await probe("/healthz") == (200, {"status": "ok"})
        postgres.start()
        assert await probe("/readyz") == (200, {"status": "ready", "degraded": []})
    finally:
        await client.close()

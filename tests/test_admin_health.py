"""The admin service's /healthz and /readyz, and its upkeep, against a dedicated Postgres that the
test stops."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from structlog.testing import capture_logs

from admin.app import create_app
from harness.postgres import PostgresServer, ensure_database
from store import partitions, rollups
from store.db import DATABASE_UNAVAILABLE, create_pool, every
from store.migrate import migrate
from store.settings import Settings
from tests.polling import eventually


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


@pytest.mark.parametrize("turns", range(4))
async def test_the_upkeep_outlives_connections_closed_while_idle_by_a_postgres_stop(
    postgres: PostgresServer, turns: int
) -> None:
    """A pooled connection idle when Postgres stops reads the server's FATAL message a loop
    iteration before its end: a query sent between the two fails with asyncpg's
    InternalClientError rather than a connection error (`turns`, the loop iterations between
    the stop and the upkeep's first runs, decides which). Either is logged, and the upkeep goes
    on once Postgres is back."""
    pool = await create_pool(postgres.url, min_size=2, max_size=2)
    runs: Counter[str] = Counter()

    def upkeep(name: str, work: Callable[[], Awaitable[object]]) -> asyncio.Task[None]:
        async def run() -> None:
            await work()
            runs[name] += 1

        return asyncio.create_task(every(0.05, run, f"{name}_failed"))

    try:
        await pool.fetchval("SELECT 1")
        with capture_logs() as logs:
            postgres.stop()  # returns once the server is down: both connections' ends are due
            for _ in range(turns):
                await asyncio.sleep(0)
            tasks = [
                upkeep("compaction", lambda: rollups.compact(pool)),
                upkeep("maintenance", lambda: partitions.maintain(pool, None)),
            ]
            await eventually(lambda: _failed(logs, "compaction", "maintenance"))
            assert not runs
            postgres.start()
            await eventually(lambda: _ran(runs, "compaction", "maintenance"))
        errors = {event["error"].split("(")[0] for event in logs if "error" in event}
        # Every failure met is one an admin request answers 503 for (store/db.py).
        assert errors and errors <= _named(DATABASE_UNAVAILABLE), logs
        assert not any(task.done() for task in tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await pool.close()


async def _failed(logs: list[MutableMapping[str, Any]], *names: str) -> bool:
    return {f"{name}_failed" for name in names} <= {event["event"] for event in logs}


def _named(classes: tuple[type[Exception], ...]) -> set[str]:
    """The names of `classes` and of all their subclasses."""
    names, todo = set(), list(classes)
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


async def _ran(runs: Counter[str], *names: str) -> bool:
    return all(runs[name] for name in names)

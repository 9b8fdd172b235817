"""Migrations: each applied exactly once, even when several processes start at the same time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from harness.postgres import scratch_database
from store.migrate import migrate, migration_files


@pytest.fixture
async def fresh_database(database_url: str) -> AsyncIterator[str]:
    """An empty database of its own, dropped after the test."""
    async with scratch_database(database_url, "migrate", migrated=False) as url:
        yield url


async def test_concurrent_migrate_runs_apply_each_migration_once(fresh_database: str) -> None:
    names = [name for name, _ in migration_files()]
    assert names == sorted(names) and names[0] == "0001_schema.sql"

    runs = await asyncio.gather(*(migrate(fresh_database) for _ in range(4)))

    applied = [name for run in runs for name in run]
    assert sorted(applied) == names  # every migration once, by exactly one of the runs
    conn = await asyncpg.connect(fresh_database)
    try:
        ledger = await conn.fetch("SELECT name FROM schema_migrations ORDER BY name")
        assert [r["name"] for r in ledger] == names
    finally:
        await conn.close()
    assert await migrate(fresh_database) == []  # and a later run finds nothing to do

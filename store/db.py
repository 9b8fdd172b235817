"""The asyncpg connection pool, with jsonb decoded to Python values."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

# A router worker serves calls from a handful of connections; admin traffic is light. Bounded
# so many workers never exhaust Postgres' max_connections (100 by default).
POOL_MIN_SIZE = 2
POOL_MAX_SIZE = 10


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(database_url: str, **overrides: Any) -> asyncpg.Pool:
    """A pool whose connections speak jsonb as Python dicts and lists."""
    options: dict[str, Any] = {
        "min_size": POOL_MIN_SIZE,
        "max_size": POOL_MAX_SIZE,
        "init": _init_connection,
    }
    options.update(overrides)
    pool = await asyncpg.create_pool(database_url, **options)
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool, within_s: float) -> None:
    """Raise unless Postgres answers within `within_s` seconds."""
    await pool.fetchval("SELECT 1", timeout=within_s)

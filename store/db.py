"""The asyncpg connection pool, with jsonb decoded to Python values."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

# A router worker holds one connection per call-writer batch in flight (router/recorder.py
# WRITERS = 3) plus one for the spool replay; the rest serve cache misses and runtime lookups,
# which are single short queries, so 6 of them absorb a burst of misses without queuing behind
# the commits. Bounded so many workers never exhaust Postgres' max_connections (100 by default):
# 8 workers take 80. Admin traffic is light and shares the same bound.
POOL_MIN_SIZE = 4
POOL_MAX_SIZE = 10

# Postgres is unreachable, shutting down or out of connections (rather than the query or its
# data being wrong: those errors would recur on every retry and must not be spooled for one).
DATABASE_UNAVAILABLE = (
    OSError,  # TimeoutError included
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.InterfaceError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection returns to the pool: no caller leaves session state
    behind (LISTEN and the migration's advisory lock use connections of their own; SET LOCAL
    and xact locks end with their transaction, which asyncpg rolls back if left open). The
    default reset costs a round trip on every release."""


async def create_pool(database_url: str, **overrides: Any) -> asyncpg.Pool:
    """A pool whose connections speak jsonb as Python dicts and lists."""
    options: dict[str, Any] = {
        "min_size": POOL_MIN_SIZE,
        "max_size": POOL_MAX_SIZE,
        "init": _init_connection,
        "reset": _keep_session,
    }
    options.update(overrides)
    pool = await asyncpg.create_pool(database_url, **options)
    assert pool is not None
    return pool


async def ping(pool: asyncpg.Pool, within_s: float) -> None:
    """Raise unless Postgres answers within `within_s` seconds."""
    await pool.fetchval("SELECT 1", timeout=within_s)

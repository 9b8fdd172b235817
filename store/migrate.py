"""Applies the numbered plain-SQL migrations shipped in store/migrations, once each."""

from __future__ import annotations

from importlib import resources

import asyncpg

# Serialises concurrent `migrate` runs (several workers starting at once); any constant works,
# it only has to be the same for every process.
MIGRATION_LOCK_KEY = 0x61676E74766572

CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
APPLIED = "SELECT name FROM schema_migrations"
RECORD = "INSERT INTO schema_migrations (name) VALUES ($1)"


def migration_files() -> list[tuple[str, str]]:
    """The shipped migrations as (name, sql), in the order they must run."""
    folder = resources.files("store").joinpath("migrations")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(name, folder.joinpath(name).read_text(encoding="utf-8")) for name in names]


async def migrate(database_url: str, *, before: str | None = None) -> list[str]:
    """Apply pending migrations under an advisory lock (only those whose names sort before
    `before`, when given: a database as an older release left it); returns the names applied
    now."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(CREATE_LEDGER)
            done = {row["name"] for row in await conn.fetch(APPLIED)}
            applied = []
            for name, sql in migration_files():
                if before is not None and name >= before:
                    break
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(sql)
                    await conn.execute(RECORD, name)
                applied.append(name)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()

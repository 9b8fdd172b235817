"""What a call is served: an agent's draft or one of its versions, reduced to the config hash."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from store import channels
from store.channels import Routing, Variant
from store.db import connection
from store.errors import AgentNotFound, VersionNotFound

SELECT_DRAFT_SNAPSHOT = "SELECT revision, config_hash FROM drafts WHERE agent_id = $1"
SELECT_VERSION_SNAPSHOT = "SELECT config_hash FROM versions WHERE agent_id = $1 AND version = $2"
# What the channels serve: the versions they pin and the drafts of the agents they route to a
# draft.
SERVED_SNAPSHOTS = """
SELECT v.agent_id, v.version, NULL::integer AS draft_revision, v.config_hash
FROM versions v
WHERE (v.agent_id, v.version) IN (SELECT agent_id, version FROM channel_variants)
UNION ALL
SELECT d.agent_id, NULL, d.revision, d.config_hash
FROM drafts d
WHERE d.agent_id IN (SELECT agent_id FROM channel_variants WHERE version IS NULL)
"""
# How metrics, logs and reports name a draft where they would name a version number.
DRAFT = "draft"


@dataclass(frozen=True)
class Snapshot:
    """One servable configuration: `version` None means the draft at `draft_revision`."""

    agent_id: str
    version: int | None
    draft_revision: int | None
    config_hash: str


def version_label(version: int | None) -> str:
    """A served version as a label: its number, or "draft"."""
    return DRAFT if version is None else str(version)


async def load_draft(pool: asyncpg.Pool | asyncpg.Connection, agent_id: str) -> Snapshot:
    """The agent's draft as it is now."""
    row = await pool.fetchrow(SELECT_DRAFT_SNAPSHOT, agent_id)
    if row is None:
        raise AgentNotFound(f"no agent {agent_id}")
    return Snapshot(agent_id, None, row["revision"], row["config_hash"])


async def load_version(
    pool: asyncpg.Pool | asyncpg.Connection, agent_id: str, version: int
) -> Snapshot:
    """A published version (immutable)."""
    digest = await pool.fetchval(SELECT_VERSION_SNAPSHOT, agent_id, version)
    if digest is None:
        raise VersionNotFound(f"agent {agent_id} has no version {version}")
    return Snapshot(agent_id, version, None, digest)


async def load_variant(pool: asyncpg.Pool, variant: Variant) -> Snapshot:
    """What `variant` serves now: its pinned version, or its agent's current draft."""
    if variant.version is None:
        return await load_draft(pool, variant.agent_id)
    return await load_version(pool, variant.agent_id, variant.version)


async def served_snapshots(conn: asyncpg.Connection) -> list[Snapshot]:
    """Every snapshot some channel serves now."""
    return [Snapshot(*row) for row in await conn.fetch(SERVED_SNAPSHOTS)]


async def warm_up(
    pool: asyncpg.Pool, within_s: float, each: Callable[[Routing], None]
) -> list[Snapshot]:
    """A router's warm-up, on one pooled connection within `within_s`: every channel's routing
    given to `each` as it is read (`channels.all_routings`), then every snapshot some channel
    serves. Here rather than in router/resolver.py, which is compiled: a compiled module holds
    no `async with` or `async for` (docs/design.md, section 4)."""
    async with connection(pool, within_s) as conn:
        async for routing in channels.all_routings(conn):
            each(routing)
        return await served_snapshots(conn)

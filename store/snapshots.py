"""What a call is served: an agent's draft or one of its versions, reduced to the config hash."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from store.channels import Variant
from store.errors import AgentNotFound, VersionNotFound

SELECT_DRAFT_SNAPSHOT = "SELECT revision, config_hash FROM drafts WHERE agent_id = $1"
SELECT_VERSION_SNAPSHOT = "SELECT config_hash FROM versions WHERE agent_id = $1 AND version = $2"


@dataclass(frozen=True)
class Snapshot:
    """One servable configuration: `version` None means the draft at `draft_revision`."""

    agent_id: str
    version: int | None
    draft_revision: int | None
    config_hash: str


async def load_draft(pool: asyncpg.Pool, agent_id: str) -> Snapshot:
    """The agent's draft as it is now."""
    row = await pool.fetchrow(SELECT_DRAFT_SNAPSHOT, agent_id)
    if row is None:
        raise AgentNotFound(f"no agent {agent_id}")
    return Snapshot(agent_id, None, row["revision"], row["config_hash"])


async def load_version(pool: asyncpg.Pool, agent_id: str, version: int) -> Snapshot:
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

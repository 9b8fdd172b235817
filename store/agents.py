"""Agents, their draft and their immutable numbered versions."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from store import audit
from store.config import config_hash, validate_config
from store.errors import (
    AgentInUse,
    AgentNotFound,
    ConfigNotFound,
    DraftUnchanged,
    RevisionConflict,
    VersionNotFound,
)
from store.pagination import cursor_time, decode_cursor, page

INSERT_BLOB = """
INSERT INTO config_blobs (hash, config) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING
"""
SELECT_BLOB = "SELECT config FROM config_blobs WHERE hash = $1"

INSERT_AGENT = "INSERT INTO agents (id, created_by) VALUES ($1, $2) RETURNING created_at"
INSERT_DRAFT = """
INSERT INTO drafts (agent_id, revision, config_hash, updated_by) VALUES ($1, 1, $2, $3)
"""

AGENT_ROWS = """
SELECT a.id, a.created_at, a.last_version, a.archived_at,
       d.revision, d.config_hash, d.updated_at, d.updated_by, b.config
FROM agents a
JOIN drafts d ON d.agent_id = a.id
JOIN config_blobs b ON b.hash = d.config_hash
"""
SELECT_AGENT = AGENT_ROWS + "WHERE a.id = $1"
LIST_AGENTS = (
    AGENT_ROWS
    + """
WHERE ($1::timestamptz IS NULL OR (a.created_at, a.id) < ($1, $2))
  AND ($4::boolean IS NULL OR (a.archived_at IS NOT NULL) = $4)
  AND ($5::text[] IS NULL OR a.id = ANY($5))
ORDER BY a.created_at DESC, a.id DESC
LIMIT $3
"""
)
# The oldest agent of that name: names are not unique, the first one made is the stable answer.
FIND_AGENT_NAMED = AGENT_ROWS + "WHERE b.config->>'name' = $1 ORDER BY a.created_at, a.id LIMIT 1"

# Archiving takes the agent row's lock, which a channel change takes too (FOR SHARE, in
# store/channels.py) before checking its targets: a pin and an archive of one agent never both
# succeed. The archive then finds any channel committed before it took the lock.
ARCHIVE_AGENT = """
UPDATE agents SET archived_at = now(), archived_by = $2 WHERE id = $1 AND archived_at IS NULL
RETURNING archived_at
"""
UNARCHIVE_AGENT = """
UPDATE agents SET archived_at = NULL, archived_by = NULL
WHERE id = $1 AND archived_at IS NOT NULL
RETURNING id
"""
CHANNELS_OF_AGENT = "SELECT DISTINCT number FROM channel_variants WHERE agent_id = $1 ORDER BY 1"

# The draft row alone: with a join, a lock that waited for a concurrent edit rechecks the join
# against the new row's hash and the old blob, finds no match, and the draft seems to vanish.
LOCK_DRAFT = "SELECT revision, config_hash FROM drafts WHERE agent_id = $1 FOR UPDATE"
UPDATE_DRAFT = """
UPDATE drafts SET revision = revision + 1, config_hash = $2, updated_at = now(), updated_by = $3
WHERE agent_id = $1
RETURNING revision, config_hash, updated_at, updated_by
"""

# The agent row is the version counter: taking its lock serialises publishes of one agent, so
# numbers are gapless without a sequence (a sequence leaks numbers on rollback).
NEXT_VERSION = """
UPDATE agents SET last_version = last_version + 1 WHERE id = $1 RETURNING last_version
"""
CONFIG_USED_BY = """
SELECT EXISTS (SELECT 1 FROM versions WHERE agent_id = ANY($2) AND config_hash = $1)
    OR EXISTS (SELECT 1 FROM drafts WHERE agent_id = ANY($2) AND config_hash = $1)
    OR EXISTS (SELECT 1 FROM calls
               WHERE agent_id = ANY($2) AND version IS NULL AND config_hash = $1)
"""
SELECT_DRAFT_STATE = "SELECT revision, config_hash FROM drafts WHERE agent_id = $1"
SELECT_VERSION_HASH = "SELECT config_hash FROM versions WHERE agent_id = $1 AND version = $2"
INSERT_VERSION = """
INSERT INTO versions (agent_id, version, name, description, author, config_hash)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING published_at
"""

SELECT_VERSION = """
SELECT v.agent_id, v.version, v.name, v.description, v.author, v.published_at, v.config_hash,
       b.config
FROM versions v JOIN config_blobs b ON b.hash = v.config_hash
WHERE v.agent_id = $1 AND v.version = $2
"""
LIST_VERSIONS = """
SELECT agent_id, version, name, description, author, published_at, config_hash,
       NULL::jsonb AS config
FROM versions
WHERE agent_id = $1 AND ($2::bigint IS NULL OR version < $2)
ORDER BY version DESC
LIMIT $3
"""

ID_ALPHABET_BYTES = 8  # 64 random bits: collisions are not a practical concern


@dataclass(frozen=True)
class Draft:
    agent_id: str
    revision: int
    config: dict[str, Any]
    config_hash: str
    updated_at: datetime
    updated_by: str


@dataclass(frozen=True)
class Agent:
    id: str
    created_at: datetime
    latest_version: int | None
    draft: Draft
    archived_at: datetime | None

    @property
    def name(self) -> str:
        """An agent is named by its draft."""
        return str(self.draft.config["name"])


@dataclass(frozen=True)
class Version:
    agent_id: str
    version: int
    name: str
    description: str
    author: str
    published_at: datetime
    config_hash: str
    config: dict[str, Any] | None  # None in history listings, which carry no snapshot


def new_agent_id() -> str:
    return "agt_" + secrets.token_hex(ID_ALPHABET_BYTES)


def _agent(row: asyncpg.Record) -> Agent:
    draft = Draft(
        agent_id=row["id"],
        revision=row["revision"],
        config=row["config"],
        config_hash=row["config_hash"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )
    return Agent(
        id=row["id"],
        created_at=row["created_at"],
        latest_version=row["last_version"] or None,
        draft=draft,
        archived_at=row["archived_at"],
    )


async def store_config(conn: asyncpg.Connection, raw: Any) -> tuple[dict[str, Any], str]:
    """Validate a configuration and store its blob; returns (filled-in config, hash)."""
    config = validate_config(raw)
    digest = config_hash(config)
    await conn.execute(INSERT_BLOB, digest, config)
    return config, digest


async def get_config(pool: asyncpg.Pool | asyncpg.Connection, digest: str) -> dict[str, Any]:
    """An immutable config blob by its hash."""
    config: dict[str, Any] | None = await pool.fetchval(SELECT_BLOB, digest)
    if config is None:
        raise ConfigNotFound(f"no config with hash {digest}")
    return config


async def config_used_by(
    conn: asyncpg.Pool | asyncpg.Connection, digest: str, agent_ids: list[str]
) -> bool:
    """Whether one of `agent_ids` has the config blob `digest` as a version, as its draft, or
    served it as a draft since edited (a token limited to those agents may read it then)."""
    used: bool = await conn.fetchval(CONFIG_USED_BY, digest, agent_ids)
    return used


async def create_agent(pool: asyncpg.Pool, raw_config: Any, actor: str) -> Agent:
    """A new agent whose draft (revision 1) is `raw_config`."""
    agent_id = new_agent_id()
    async with pool.acquire() as conn, conn.transaction():
        _, digest = await store_config(conn, raw_config)
        await conn.execute(INSERT_AGENT, agent_id, actor)
        await conn.execute(INSERT_DRAFT, agent_id, digest, actor)
        await audit.record(
            conn, actor, "agent.create", agent_id=agent_id, after={"config_hash": digest}
        )
        row = await conn.fetchrow(SELECT_AGENT, agent_id)
    return _agent(row)


async def get_agent(pool: asyncpg.Pool | asyncpg.Connection, agent_id: str) -> Agent:
    """The agent with its current draft; AgentNotFound when there is none."""
    row = await pool.fetchrow(SELECT_AGENT, agent_id)
    if row is None:
        raise AgentNotFound(f"no agent {agent_id}")
    return _agent(row)


async def find_agent_named(pool: asyncpg.Pool, name: str) -> Agent | None:
    """The oldest agent whose draft is named `name`, or None."""
    row = await pool.fetchrow(FIND_AGENT_NAMED, name)
    return _agent(row) if row else None


async def list_agents(
    pool: asyncpg.Pool,
    *,
    limit: int,
    cursor: str | None = None,
    archived: bool | None = False,
    agents: list[str] | None = None,
) -> tuple[list[Agent], str | None]:
    """Newest first, paginated: live agents, archived ones (`archived`), or all (None); only
    `agents` when given (a token's scopes)."""
    after = decode_cursor(cursor, (str, str))
    created = cursor_time(after[0]) if after else None
    rows = await pool.fetch(
        LIST_AGENTS, created, after[1] if after else None, limit + 1, archived, agents
    )
    return page([_agent(r) for r in rows], limit, lambda a: [a.created_at.isoformat(), a.id])


async def archive(pool: asyncpg.Pool, agent_id: str, actor: str) -> Agent:
    """Hide the agent from the list and from new pins; its versions and calls stay.

    Refused (AgentInUse, naming them) while channels route to it: archiving must not take a
    live number's agent away. Archiving an archived agent changes nothing.
    """
    async with pool.acquire() as conn, conn.transaction():
        archived_at = await conn.fetchval(ARCHIVE_AGENT, agent_id, actor)
        if archived_at is not None:
            numbers = [r["number"] for r in await conn.fetch(CHANNELS_OF_AGENT, agent_id)]
            if numbers:
                raise AgentInUse(
                    f"channels route to agent {agent_id}: "
                    f"{', '.join(numbers)}; repoint or delete them first",
                    {"channels": numbers},
                )
            await audit.record(
                conn,
                actor,
                "agent.archive",
                agent_id=agent_id,
                after={"archived_at": archived_at.isoformat()},
            )
        return await get_agent(conn, agent_id)


async def unarchive(pool: asyncpg.Pool, agent_id: str, actor: str) -> Agent:
    """List the agent again and let channels route to it; a live agent is left as it is."""
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval(UNARCHIVE_AGENT, agent_id) is not None:
            await audit.record(conn, actor, "agent.unarchive", agent_id=agent_id)
        return await get_agent(conn, agent_id)


async def update_draft(
    pool: asyncpg.Pool,
    agent_id: str,
    change: Callable[[dict[str, Any]], Any],
    actor: str,
    *,
    if_match: int | None = None,
    action: str = "draft.update",
    audit_note: dict[str, Any] | None = None,
) -> Draft:
    """Replace the draft with `change(current config)`, validated, as revision + 1.

    The draft row is locked while `change` runs, so a merge patch applies to exactly the
    revision it was checked against. `if_match` mismatching the revision raises RevisionConflict.
    """
    async with pool.acquire() as conn, conn.transaction():
        current = await conn.fetchrow(LOCK_DRAFT, agent_id)
        if current is None:
            raise AgentNotFound(f"no agent {agent_id}")
        if if_match is not None and if_match != current["revision"]:
            raise RevisionConflict(
                f"draft is at revision {current['revision']}, not {if_match}",
                {"current_revision": current["revision"]},
            )
        current_config = await conn.fetchval(SELECT_BLOB, current["config_hash"])
        config, digest = await store_config(conn, change(current_config))
        row = await conn.fetchrow(UPDATE_DRAFT, agent_id, digest, actor)
        await audit.record(
            conn,
            actor,
            action,
            agent_id=agent_id,
            before={"revision": current["revision"], "config_hash": current["config_hash"]},
            after={"revision": row["revision"], "config_hash": digest, **(audit_note or {})},
        )
    return Draft(agent_id=agent_id, config=config, **dict(row))


async def publish(
    pool: asyncpg.Pool,
    agent_id: str,
    name: str,
    description: str,
    author: str,
    *,
    if_revision: int | None = None,
    allow_unchanged: bool = False,
) -> Version:
    """Snapshot the current draft as the agent's next version; the draft is unchanged.

    `if_revision` is the draft revision the publisher reviewed: any other raises
    RevisionConflict, so nobody publishes an edit they did not see. A draft identical to the
    latest version raises DraftUnchanged unless `allow_unchanged`.
    """
    async with pool.acquire() as conn, conn.transaction():
        number = await conn.fetchval(NEXT_VERSION, agent_id)
        if number is None:
            raise AgentNotFound(f"no agent {agent_id}")
        # Read after taking the counter lock: a draft edit committed before this publish is in.
        draft = await conn.fetchrow(SELECT_DRAFT_STATE, agent_id)
        _check_publishable(
            draft["revision"],
            draft["config_hash"],
            await conn.fetchval(SELECT_VERSION_HASH, agent_id, number - 1),
            if_revision=if_revision,
            allow_unchanged=allow_unchanged,
        )
        digest = draft["config_hash"]
        published_at = await conn.fetchval(
            INSERT_VERSION, agent_id, number, name, description, author, digest
        )
        await audit.record(
            conn,
            author,
            "version.publish",
            agent_id=agent_id,
            before={"latest_version": number - 1 or None, "draft_revision": draft["revision"]},
            after={"version": number, "name": name, "config_hash": digest},
        )
        config = await conn.fetchval(SELECT_BLOB, digest)
    return Version(agent_id, number, name, description, author, published_at, digest, config)


def _check_publishable(
    revision: int,
    digest: str,
    latest_digest: str | None,
    *,
    if_revision: int | None,
    allow_unchanged: bool,
) -> None:
    if if_revision is not None and if_revision != revision:
        raise RevisionConflict(
            f"the draft is at revision {revision}, not {if_revision}: review it again",
            {"current_revision": revision},
        )
    if digest == latest_digest and not allow_unchanged:
        raise DraftUnchanged(
            "the draft is identical to the latest version; send allow_unchanged: true to "
            "publish it anyway",
            {"current_revision": revision, "config_hash": digest},
        )


async def get_version(pool: asyncpg.Pool, agent_id: str, number: int) -> Version:
    """One full snapshot."""
    row = await pool.fetchrow(SELECT_VERSION, agent_id, number)
    if row is None:
        await get_agent(pool, agent_id)
        raise VersionNotFound(f"agent {agent_id} has no version {number}")
    return Version(**dict(row))


@dataclass(frozen=True)
class History:
    draft: Draft
    versions: list[Version]  # newest first, without their snapshots
    next_cursor: str | None


async def history(
    pool: asyncpg.Pool, agent_id: str, *, limit: int, cursor: str | None = None
) -> History:
    """The draft and a page of published versions, newest first, read as one snapshot."""
    after = decode_cursor(cursor, (int,))
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        draft = (await get_agent(conn, agent_id)).draft
        rows = await conn.fetch(LIST_VERSIONS, agent_id, after[0] if after else None, limit + 1)
    versions, next_cursor = page([Version(**dict(r)) for r in rows], limit, lambda v: [v.version])
    return History(draft, versions, next_cursor)


async def restore(pool: asyncpg.Pool, agent_id: str, number: int, actor: str) -> Draft:
    """Overwrite the draft with version `number`'s config (revision + 1); no version is made."""
    version = await get_version(pool, agent_id, number)
    snapshot = version.config
    return await update_draft(
        pool,
        agent_id,
        lambda _current: snapshot,
        actor,
        action="version.restore",
        audit_note={"restored_version": number},
    )

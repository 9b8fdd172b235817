"""Channels (phone numbers) and their routing: weighted variants pinned to versions or drafts."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any, Literal

import asyncpg

from store import audit
from store.errors import ChannelNotFound, InvalidRouting, RevisionConflict
from store.numbers import normalize_e164
from store.pagination import decode_cursor, page

MAX_VARIANTS = 20
MAX_LABEL_CHARS = 64
# Agent ids are `agt_` and 16 hex digits; anything far longer names no agent.
MAX_AGENT_ID_CHARS = 64
# Weights are relative: a million allows splits as fine as 0.0001% and keeps every sum exact.
MAX_WEIGHT = 1_000_000
# versions.version is a Postgres integer.
MAX_VERSION = 2**31 - 1
# Whether a caller keeps their variant across calls, or each call draws afresh (by call id).
Sticky = Literal["caller", "call"]
SHORTHAND_LABEL = "default"
SHORTHAND_WEIGHT = 100

SELECT_CHANNEL = """
SELECT number, salt, sticky, revision, updated_at, updated_by FROM channels WHERE number = $1
"""
LOCK_CHANNEL = SELECT_CHANNEL + " FOR UPDATE"
SELECT_VARIANTS = """
SELECT number, label, agent_id, version, weight
FROM channel_variants WHERE number = ANY($1::text[]) ORDER BY number, position
"""
LIST_CHANNELS = """
SELECT number, salt, sticky, revision, updated_at, updated_by
FROM channels
WHERE ($1::text IS NULL OR number > $1)
  AND ($2::text IS NULL OR EXISTS (
        SELECT 1 FROM channel_variants v WHERE v.number = channels.number AND v.agent_id = $2))
  AND ($4::text[] IS NULL OR NOT EXISTS (
        SELECT 1 FROM channel_variants v
        WHERE v.number = channels.number AND v.agent_id <> ALL($4)))
ORDER BY number
LIMIT $3
"""
UPSERT_CHANNEL = """
INSERT INTO channels (number, salt, sticky, updated_by) VALUES ($1, $2, $3, $4)
ON CONFLICT (number) DO UPDATE
SET sticky = EXCLUDED.sticky, revision = channels.revision + 1, updated_at = now(),
    updated_by = EXCLUDED.updated_by
RETURNING number, salt, sticky, revision, updated_at, updated_by
"""
DELETE_VARIANTS = "DELETE FROM channel_variants WHERE number = $1"
INSERT_VARIANTS = """
INSERT INTO channel_variants (number, position, label, agent_id, version, weight)
SELECT $1, v.position - 1, v.label, v.agent_id, v.version, v.weight
FROM unnest($2::text[], $3::text[], $4::integer[], $5::integer[])
     WITH ORDINALITY AS v(label, agent_id, version, weight, position)
"""
DELETE_CHANNEL = "DELETE FROM channels WHERE number = $1"
# Every channel with its variants, one row per variant (or one with NULL variant columns for a
# channel without any), grouped by number so a stream can assemble each routing as it goes.
ALL_ROUTINGS = """
SELECT c.number, c.salt, c.sticky, c.revision, c.updated_at, c.updated_by,
       v.label, v.agent_id, v.version, v.weight
FROM channels c LEFT JOIN channel_variants v ON v.number = c.number
ORDER BY c.number, v.position
"""
# Rows fetched per round trip while streaming every routing.
ROUTING_STREAM_BATCH = 5_000
# Held until the routing commits: an archive of a target (store/agents.py) waits for it, or it
# for the archive, which MISSING_TARGETS then sees.
LOCK_TARGET_AGENTS = "SELECT 1 FROM agents WHERE id = ANY($1::text[]) ORDER BY id FOR SHARE"
MISSING_TARGETS = """
SELECT t.i, t.agent_id, t.version, a.id IS NULL AS no_agent, a.archived_at IS NOT NULL AS archived
FROM unnest($1::text[], $2::integer[]) WITH ORDINALITY AS t(agent_id, version, i)
LEFT JOIN agents a ON a.id = t.agent_id
WHERE a.id IS NULL OR a.archived_at IS NOT NULL
   OR (t.version IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM versions v WHERE v.agent_id = t.agent_id AND v.version = t.version))
ORDER BY t.i
"""


@dataclass(frozen=True)
class Variant:
    label: str
    agent_id: str
    version: int | None  # None serves the agent's draft
    weight: int


@dataclass(frozen=True)
class Routing:
    number: str
    salt: str
    sticky: str
    revision: int
    variants: tuple[Variant, ...]
    updated_at: datetime
    updated_by: str

    def public(self) -> dict[str, Any]:
        """The channel resource as the admin API shows it (the salt stays internal)."""
        return {
            "number": self.number,
            "sticky": self.sticky,
            "revision": self.revision,
            "variants": [asdict(v) for v in self.variants],
            "updated_at": self.updated_at.isoformat(),
            "updated_by": self.updated_by,
        }


def routing_error(path: str, message: str) -> InvalidRouting:
    """The error for one problem at `path` of a channel PUT (or its number)."""
    return InvalidRouting("routing is invalid", [{"path": path, "message": message}])


def parse_number(raw: str) -> str:
    """A channel number in strict E.164; InvalidRouting otherwise."""
    number = normalize_e164(raw)
    if number is None or number != raw:
        raise routing_error("number", "must be an E.164 number such as +14155550100")
    return number


def _routing(row: asyncpg.Record, variants: list[asyncpg.Record]) -> Routing:
    return Routing(
        number=row["number"],
        salt=row["salt"],
        sticky=row["sticky"],
        revision=row["revision"],
        variants=tuple(
            Variant(v["label"], v["agent_id"], v["version"], v["weight"]) for v in variants
        ),
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
    )


async def _with_variants(
    conn: asyncpg.Pool | asyncpg.Connection, rows: list[asyncpg.Record]
) -> list[Routing]:
    variants = await conn.fetch(SELECT_VARIANTS, [r["number"] for r in rows])
    by_number: dict[str, list[asyncpg.Record]] = {}
    for v in variants:
        by_number.setdefault(v["number"], []).append(v)
    return [_routing(r, by_number.get(r["number"], [])) for r in rows]


async def find_channel(conn: asyncpg.Pool | asyncpg.Connection, number: str) -> Routing | None:
    """The routing of `number`, or None when it is not a channel."""
    row = await conn.fetchrow(SELECT_CHANNEL, number)
    return (await _with_variants(conn, [row]))[0] if row else None


async def all_routings(conn: asyncpg.Connection) -> AsyncIterator[Routing]:
    """Every channel's routing, streamed in number order from one query (a cache warm-up).

    Runs in a read-only repeatable-read transaction of its own: one consistent snapshot, read a
    few thousand rows at a time rather than held in memory all at once. Equal variants are one
    shared (immutable) object: most channels of a deployment pin the same few versions.
    """
    shared: dict[tuple[Any, ...], Variant] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        channel: tuple[Any, ...] | None = None
        variants: list[Variant] = []
        cursor = await conn.cursor(ALL_ROUTINGS)
        # Batches, not `async for`: a step of an async iterator per row costs more than the row.
        while rows := await cursor.fetch(ROUTING_STREAM_BATCH):
            for row in rows:
                values = tuple(row)
                if channel is None or values[0] != channel[0]:
                    if channel is not None:
                        yield _joined_routing(channel, variants)
                    channel, variants = values[:6], []
                variant = values[6:]
                if variant[0] is not None:  # a channel without variants has one row of NULLs
                    variants.append(
                        shared.get(variant) or shared.setdefault(variant, Variant(*variant))
                    )
        if channel is not None:
            yield _joined_routing(channel, variants)


def _joined_routing(channel: tuple[Any, ...], variants: list[Variant]) -> Routing:
    """A Routing from ALL_ROUTINGS' channel columns (by position: the stream's hot loop)."""
    number, salt, sticky, revision, updated_at, updated_by = channel
    return Routing(number, salt, sticky, revision, tuple(variants), updated_at, updated_by)


async def get_channel(pool: asyncpg.Pool, number: str) -> Routing:
    routing = await find_channel(pool, number)
    if routing is None:
        raise ChannelNotFound(f"no channel {number}")
    return routing


async def list_channels(
    pool: asyncpg.Pool,
    *,
    limit: int,
    cursor: str | None = None,
    agent_id: str | None = None,
    agents: list[str] | None = None,
) -> tuple[list[Routing], str | None]:
    """Channels by number, optionally only those routing to `agent_id`, or only to `agents`
    (a token's scopes)."""
    after = decode_cursor(cursor, (str,))
    rows = await pool.fetch(LIST_CHANNELS, after[0] if after else None, agent_id, limit + 1, agents)
    return page(await _with_variants(pool, rows), limit, lambda r: [r.number])


async def check_targets(
    conn: asyncpg.Connection, variants: tuple[Variant, ...], path: Callable[[int], str]
) -> None:
    """InvalidRouting at `path(i)` for the first variant whose agent or version does not exist,
    or whose agent is archived; the agents are locked against an archive until commit."""
    agent_ids = [v.agent_id for v in variants]
    await conn.execute(LOCK_TARGET_AGENTS, agent_ids)
    missing = await conn.fetch(MISSING_TARGETS, agent_ids, [v.version for v in variants])
    if missing:
        first = missing[0]
        at = path(first["i"] - 1)
        if first["no_agent"]:
            raise routing_error(f"{at}.agent_id", f"no agent {first['agent_id']}")
        if first["archived"]:
            raise routing_error(
                f"{at}.agent_id",
                f"agent {first['agent_id']} is archived; unarchive it to route calls to it",
            )
        raise routing_error(f"{at}.version", f"agent has no version {first['version']}")


def _audit_action(before: Routing | None, variants: tuple[Variant, ...]) -> str:
    """`channel.weights` when only the weights of the same variants moved; otherwise
    `channel.pin` for a plain pin and `channel.variants` for a test."""
    if before is not None and before.variants != variants:
        unweighted = [replace(v, weight=0) for v in variants]
        if [replace(v, weight=0) for v in before.variants] == unweighted:
            return "channel.weights"
    return "channel.pin" if len(variants) == 1 else "channel.variants"


async def set_channel(
    pool: asyncpg.Pool,
    number: str,
    variants: tuple[Variant, ...],
    sticky: str,
    actor: str,
    *,
    action: str | None = None,
    audit_note: dict[str, Any] | None = None,
    if_revision: int | None = None,
) -> Routing:
    """Create or replace a channel's routing in a transaction of its own (see apply_routing)."""
    async with pool.acquire() as conn, conn.transaction():
        return await apply_routing(
            conn,
            number,
            variants,
            sticky,
            actor,
            action=action,
            audit_note=audit_note,
            if_revision=if_revision,
        )


async def apply_routing(
    conn: asyncpg.Connection,
    number: str,
    variants: tuple[Variant, ...],
    sticky: str,
    actor: str,
    *,
    action: str | None = None,
    audit_note: dict[str, Any] | None = None,
    if_revision: int | None = None,
    target_path: Callable[[int], str] = lambda i: f"variants[{i}]",
) -> Routing:
    """Create or replace a channel's routing (revision + 1), audited and announced, inside the
    caller's transaction: the one path of every routing change (a manual pin, a guardrail trip,
    a rollout's step).

    With `if_revision`, the change applies only to a channel still at that revision (else
    RevisionConflict), so a read-modify-write never overwrites a change made in between.
    `target_path` names a variant in the error for an unknown agent or version.
    """
    await check_targets(conn, variants, target_path)
    before_row = await conn.fetchrow(LOCK_CHANNEL, number)
    current = before_row["revision"] if before_row else None
    if if_revision is not None and current != if_revision:
        raise RevisionConflict(
            f"channel {number} is at revision {current}, not {if_revision}",
            {"current_revision": current},
        )
    before = (await _with_variants(conn, [before_row]))[0] if before_row else None
    row = await conn.fetchrow(UPSERT_CHANNEL, number, secrets.token_hex(8), sticky, actor)
    await conn.execute(DELETE_VARIANTS, number)
    await conn.execute(
        INSERT_VARIANTS,
        number,
        [v.label for v in variants],
        [v.agent_id for v in variants],
        [v.version for v in variants],
        [v.weight for v in variants],
    )
    routing = replace(_routing(row, []), variants=variants)
    await audit.record(
        conn,
        actor,
        action or _audit_action(before, variants),
        channel=number,
        before=before.public() if before else None,
        after={**routing.public(), **(audit_note or {})},
    )
    return routing


async def delete_channel(pool: asyncpg.Pool, number: str, actor: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        before_row = await conn.fetchrow(LOCK_CHANNEL, number)
        if before_row is None:
            raise ChannelNotFound(f"no channel {number}")
        before = (await _with_variants(conn, [before_row]))[0]
        await conn.execute(DELETE_CHANNEL, number)
        await audit.record(conn, actor, "channel.delete", channel=number, before=before.public())

"""The audit log: who published, restored, pinned or changed what, when, from what to what."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from store.pagination import decode_cursor, page

INSERT_AUDIT = """
INSERT INTO audit_log (actor, action, agent_id, channel, before, after)
VALUES ($1, $2, $3, $4, $5, $6)
"""

LIST_AUDIT = """
SELECT id, at, actor, action, agent_id, channel, before, after
FROM audit_log
WHERE ($1::text IS NULL OR agent_id = $1)
  AND ($2::text IS NULL OR channel = $2)
  AND ($3::text IS NULL OR action = $3)
  AND ($4::bigint IS NULL OR id < $4)
  AND ($6::text[] IS NULL OR agent_id = ANY($6))
ORDER BY id DESC
LIMIT $5
"""


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    agent_id: str | None
    channel: str | None
    before: Any
    after: Any


async def record(
    conn: asyncpg.Connection,
    actor: str,
    action: str,
    *,
    agent_id: str | None = None,
    channel: str | None = None,
    before: Any = None,
    after: Any = None,
) -> None:
    """Write one audit entry; call inside the transaction that makes the change."""
    await conn.execute(INSERT_AUDIT, actor, action, agent_id, channel, before, after)


async def list_entries(
    pool: asyncpg.Pool,
    *,
    limit: int,
    cursor: str | None = None,
    agent_id: str | None = None,
    channel: str | None = None,
    action: str | None = None,
    agents: list[str] | None = None,
) -> tuple[list[AuditEntry], str | None]:
    """Newest first, paginated; when `agents` is given (a token's scopes), only entries about
    one of them."""
    after = decode_cursor(cursor, (int,))
    rows = await pool.fetch(
        LIST_AUDIT, agent_id, channel, action, after[0] if after else None, limit + 1, agents
    )
    return page([AuditEntry(**dict(r)) for r in rows], limit, lambda e: [e.id])

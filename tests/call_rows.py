"""Factories for calls: rows that analytics tests insert with SQL, as the router would record
them, with the outcomes each test needs; and the router's own call values (a call to record, a
recorded call) for the tests of recording and spooling."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from store.calls import CallRecord, Candidate, NewCall
from tests.router_fixtures import CALLER, CHANNEL

# A fixed start, so that two calls built alike are equal.
STARTED_AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

SERVED_VERSION = "SELECT config_hash FROM versions WHERE agent_id = $1 AND version = $2"
SERVED_DRAFT = "SELECT config_hash, revision FROM drafts WHERE agent_id = $1"
# Each call with its key (migration 0011: every row of `calls` has one in call_keys).
INSERT_CALLS = """
WITH c AS (
    SELECT * FROM unnest($8::text[], $9::text[], $10::text[], $11::float8[], $12::text[],
                         $13::boolean[]) AS c(call_id, caller, status, duration_s, sentiment,
                                              automated)
), keys AS (
    INSERT INTO call_keys (provider, provider_call_id, call_id, started_at)
    SELECT 'test', call_id, call_id, $7 FROM c
)
INSERT INTO calls (call_id, provider, provider_call_id, channel, from_number, agent_id, version,
                   draft_revision, config_hash, variant, routing_revision, status, started_at,
                   duration_s, sentiment, automated, analysis)
SELECT c.call_id, 'test', c.call_id, $1, c.caller, $2, $3, $4, $5, $6, 1, c.status, $7,
       c.duration_s, c.sentiment, c.automated,
       CASE WHEN c.automated IS NULL THEN NULL ELSE '{"fields": {}}'::jsonb END
FROM c
"""


@dataclass(frozen=True)
class Outcome:
    """What became of one call; automated None means not analysed yet."""

    automated: bool | None = None
    sentiment: str | None = None
    duration_s: float | None = None
    status: str = "completed"


async def insert_calls(
    pool: asyncpg.Pool,
    agent_id: str,
    version: int | None,
    outcomes: Sequence[Outcome],
    *,
    channel: str = CHANNEL,
    variant: str = "default",
    started_at: datetime | None = None,
    draft_revision: int | None = None,
) -> list[str]:
    """One call per outcome, served `version` (None: the agent's current draft, recorded as
    `draft_revision` when given); returns the call ids."""
    if version is None:
        row = await pool.fetchrow(SERVED_DRAFT, agent_id)
        config_hash, revision = row["config_hash"], draft_revision or row["revision"]
    else:
        config_hash, revision = await pool.fetchval(SERVED_VERSION, agent_id, version), None
    ids = [f"call-{secrets.token_hex(8)}" for _ in outcomes]
    await pool.execute(
        INSERT_CALLS,
        channel,
        agent_id,
        version,
        revision,
        config_hash,
        variant,
        started_at or datetime.now(UTC) - timedelta(hours=1),
        ids,
        [f"+1415555{i:04d}" for i in range(len(outcomes))],
        [o.status for o in outcomes],
        [o.duration_s for o in outcomes],
        [o.sentiment for o in outcomes],
        [o.automated for o in outcomes],
    )
    return ids


def new_call(
    sid: str,
    drawn: str,
    candidates: tuple[Candidate, ...],
    *,
    caller: str = CALLER,
    remember: bool = True,
    started_at: datetime = STARTED_AT,
) -> NewCall:
    """Twilio call `sid` from `caller` to CHANNEL, to record as `drawn` among `candidates`."""
    return NewCall(
        call_id=f"call_{sid}",
        provider="twilio",
        provider_call_id=sid,
        channel=CHANNEL,
        from_number=caller,
        routing_revision=1,
        started_at=started_at,
        drawn=drawn,
        remember=remember,
        candidates=candidates,
    )


# A call as a router holds it once recorded: a Twilio call just answered, served draft revision 3.
RECORDED_CALL = CallRecord(
    call_id="call_1",
    provider="twilio",
    provider_call_id="CA1",
    channel=CHANNEL,
    from_number=CALLER,
    agent_id="agt_1",
    version=None,
    draft_revision=3,
    config_hash="c" * 64,
    variant="default",
    routing_revision=1,
    status="initiated",
    started_at=STARTED_AT,
    ended_at=None,
    duration_s=None,
    sentiment=None,
    automated=None,
)

# What the service never runs: agents are archived, never deleted (migration 0012's trigger).
DELETE_AGENT = "DELETE FROM agents WHERE id = $1"


async def lose_agent(pool: asyncpg.Pool, agent_id: str) -> None:
    """The database as a restore from a backup older than the agent would leave it (replica
    mode skips the triggers that refuse the delete, which only a superuser can do)."""
    async with pool.acquire() as conn:
        await conn.execute("SET session_replication_role = replica")
        try:
            await conn.execute(DELETE_AGENT, agent_id)
        finally:
            await conn.execute("RESET session_replication_role")

"""Call records: written once per provider call (group-committed), ended, listed, looked up."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

import asyncpg

from store.db import WRITE_BUDGET_S, connection, is_data_error
from store.errors import CallNotFound
from store.pagination import cursor_time, decode_cursor, page

# The columns of a call record, in CallRecord's field order: every query returning calls
# selects them first (then `analysis` where it is wanted), and `call_record` reads them back.
CALL_COLUMNS = """
call_id, provider, provider_call_id, channel, from_number, agent_id, version, draft_revision,
config_hash, variant, routing_revision, status, started_at, ended_at, duration_s, sentiment,
automated
"""
# A whole batch of calls in one statement (one round trip): record_call (migration 0005) runs
# once per call, in order, and each call sees the ones before it. The calls travel as parallel
# arrays, each call's candidates as the text of a JSON array of `candidate_json` objects (text,
# as asyncpg would read nested lists as array dimensions). The inputs are named `in_*` so that
# CALL_COLUMNS can only mean the recorded row's.
RECORD_CALLS = (
    "SELECT"
    + CALL_COLUMNS
    + """
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::integer[],
            $7::timestamptz[], $8::text[], $9::boolean[], $10::text[])
     WITH ORDINALITY AS c(in_call_id, in_provider, in_provider_call_id, in_channel,
                          in_from_number, in_routing_revision, in_started_at, in_drawn,
                          in_remember, in_candidates, n)
CROSS JOIN LATERAL record_call(c.in_call_id, c.in_provider, c.in_provider_call_id, c.in_channel,
                               c.in_from_number, c.in_routing_revision, c.in_started_at,
                               c.in_drawn, c.in_remember, c.in_candidates::jsonb) r
ORDER BY c.n
"""
)
SELECT_CALL = "SELECT" + CALL_COLUMNS + ", analysis FROM calls WHERE call_id = $1"
# A call named by its agentver call id ($1) or by its provider's ($2, $3), the other side NULL:
# each side is unique, so at most one row matches, through either index.
CALL_REF_MATCHES = "(call_id = $1 OR (provider = $2 AND provider_call_id = $3))"
SELECT_CALL_REF = "SELECT" + CALL_COLUMNS + ", analysis FROM calls WHERE " + CALL_REF_MATCHES
SELECT_ASSIGNMENT = "SELECT label FROM caller_assignments WHERE number = $1 AND caller = $2"

# Once ended, a call is frozen: duplicate and late events change nothing.
END_CALL = """
UPDATE calls
SET status = $3, ended_at = $4,
    duration_s = coalesce($5, greatest(0, extract(epoch FROM $4 - started_at)))
WHERE provider = $1 AND provider_call_id = $2 AND ended_at IS NULL
RETURNING agent_id, version, duration_s
"""
KEEP_EARLY_ENDING = """
INSERT INTO call_endings (provider, provider_call_id, status, ended_at, duration_s)
SELECT $1, $2, $3, $4, $5
WHERE NOT EXISTS (SELECT 1 FROM calls WHERE provider = $1 AND provider_call_id = $2)
ON CONFLICT (provider, provider_call_id) DO NOTHING
"""
# Progress only moves forward: a late `ringing` never overwrites `in-progress`, and nothing
# overwrites an ending. A status outside this list (a provider's new one) is taken as news.
SET_STATUS = """
UPDATE calls SET status = $3
WHERE provider = $1 AND provider_call_id = $2 AND ended_at IS NULL
  AND coalesce(array_position(ARRAY['initiated', 'queued', 'ringing', 'in-progress'], status), 0)
    < coalesce(array_position(ARRAY['initiated', 'queued', 'ringing', 'in-progress'], $3), 5)
"""

# The call list's filters, $1 to $13 (CallFilter's fields, in order, through `_filter_args`).
_CALL_FILTER = """
WHERE ($1::text IS NULL OR agent_id = $1)
  AND (NOT $2::boolean OR version IS NULL)
  AND ($3::integer IS NULL OR version = $3)
  AND ($4::text IS NULL OR variant = $4)
  AND ($5::text IS NULL OR channel = $5)
  AND ($6::timestamptz IS NULL OR started_at >= $6)
  AND ($7::timestamptz IS NULL OR started_at < $7)
  AND ($8::text IS NULL OR status = $8)
  AND ($9::text IS NULL OR sentiment = $9)
  AND ($10::boolean IS NULL OR automated = $10)
  AND ($11::text IS NULL OR provider = $11)
  AND ($12::text IS NULL OR provider_call_id = $12)
  AND ($13::text[] IS NULL OR agent_id = ANY($13))
"""
LIST_CALLS = (
    "SELECT"
    + CALL_COLUMNS
    + "FROM calls"
    + _CALL_FILTER
    + """  AND ($14::timestamptz IS NULL OR (started_at, call_id) < ($14, $15))
ORDER BY started_at DESC, call_id DESC
LIMIT $16
"""
)
# Counting stops at $14 rows, so a total costs at most that many index entries however many
# calls match.
COUNT_CALLS = (
    "SELECT count(*) FROM (SELECT 1 FROM calls"  # noqa: S608 (module constants only)
    + _CALL_FILTER
    + "LIMIT $14) AS capped"
)
# The most calls a total counts, so that asking for one never reads more than this many rows;
# beyond it the total is the cap, marked inexact (the console says "more than 100,000").
MAX_CALL_COUNT = 100_000


# Where calls come from: the `provider` of a call record, and the prefix of a provider call id
# named as `provider:provider_call_id`.
Provider = Literal["twilio", "telnyx", "generic"]
PROVIDERS: tuple[Provider, ...] = get_args(Provider)
# The ways a call may be named, as a 404 lists them.
CALL_REF_FORMS = (
    "the agentver call id (call_ and 24 hex digits)",
    "provider:provider_call_id, e.g. twilio:CA0123…, telnyx:v3:… or generic:…",
)


@dataclass(frozen=True)
class CallRef:
    """A call named by its agentver call id, or by the provider's own call id."""

    text: str
    call_id: str | None
    provider: str | None
    provider_call_id: str | None

    @classmethod
    def parse(cls, text: str) -> CallRef:
        """`twilio:CA…` (a known provider, a colon, a non-empty id) or an agentver call id.
        Agentver ids hold no colon; a provider's id may (Telnyx's `v3:…`): only the first
        colon splits."""
        provider, colon, provider_call_id = text.partition(":")
        if colon and provider in PROVIDERS and provider_call_id:
            return cls(text, None, provider, provider_call_id)
        return cls(text, text, None, None)

    def args(self) -> tuple[str | None, str | None, str | None]:
        """CALL_REF_MATCHES' parameters."""
        return self.call_id, self.provider, self.provider_call_id

    def not_found(self) -> CallNotFound:
        return CallNotFound(
            f"no call {self.text}; a call is named by " + " or by ".join(CALL_REF_FORMS),
            {"accepted_forms": list(CALL_REF_FORMS)},
        )


@dataclass(frozen=True)
class Candidate:
    """A live variant the call may be served from, with the snapshot it would get."""

    label: str
    agent_id: str
    version: int | None
    draft_revision: int | None
    config_hash: str


@dataclass(frozen=True)
class NewCall:
    """A call to record. `drawn` is the fresh draw; with `remember`, the caller's remembered
    variant wins while it is among `candidates` (which then hold every live variant)."""

    call_id: str
    provider: str
    provider_call_id: str
    channel: str
    from_number: str
    routing_revision: int
    started_at: datetime
    drawn: str
    remember: bool
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class CallEnd:
    """A provider's report that a call ended."""

    provider: str
    provider_call_id: str
    status: str
    ended_at: datetime
    duration_s: float | None


@dataclass(frozen=True)
class CallRecord:
    """A recorded call: its row in `calls`, fields in CALL_COLUMNS' order."""

    call_id: str
    provider: str
    provider_call_id: str
    channel: str
    from_number: str
    agent_id: str
    version: int | None
    draft_revision: int | None
    config_hash: str
    variant: str
    routing_revision: int
    status: str
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    sentiment: str | None
    automated: bool | None
    analysis: dict[str, Any] | None = None  # {"fields", "posted_at", "posted_by"} once analysed

    def public(self) -> dict[str, Any]:
        """The call resource of the API (its shape: admin/schemas.py Call); `version` null means the
        draft."""
        return {
            "call_id": self.call_id,
            "provider": self.provider,
            "provider_call_id": self.provider_call_id,
            "channel": self.channel,
            "from": self.from_number,
            "agent_id": self.agent_id,
            "version": self.version,
            "draft_revision": self.draft_revision,
            "config_hash": self.config_hash,
            "variant": self.variant,
            "status": self.status,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": self.duration_s,
            "sentiment": self.sentiment,
            "automated": self.automated,
        }

    def analysis_json(self) -> dict[str, Any] | None:
        """The analysis as posted, or None before the voice agent reported."""
        if self.analysis is None:
            return None
        return {"sentiment": self.sentiment, "automated": self.automated, **self.analysis}


_RECORD_FIELD_COUNT = len(CallRecord.__dataclass_fields__)


@dataclass(frozen=True)
class CallFilter:
    agent_id: str | None = None
    draft: bool = False  # only calls served a draft
    version: int | None = None
    variant: str | None = None
    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    status: str | None = None
    sentiment: str | None = None
    automated: bool | None = None
    provider: str | None = None
    provider_call_id: str | None = None
    agents: list[str] | None = None  # only calls served by these agents (a token's scopes)


class CallNotRecorded(Exception):
    """The call matched none of its candidates: a bug in the caller, never a provider error."""


def _lock_order(call: NewCall) -> tuple[str, str, str, str]:
    """The order a batch takes its row locks in (caller assignment, then provider call id): the
    same in every batch, so batches committing side by side wait for each other, never
    deadlock. A stable sort keeps a caller's (or a call id's) calls in arrival order."""
    return call.channel, call.from_number, call.provider, call.provider_call_id


def candidate_json(c: Candidate) -> dict[str, Any]:
    """A candidate as the JSON object record_call() and the spool read."""
    return {
        "label": c.label,
        "agent_id": c.agent_id,
        "version": c.version,
        "draft_revision": c.draft_revision,
        "config_hash": c.config_hash,
    }


def call_record(row: asyncpg.Record) -> CallRecord:
    """The call in a row that starts with CALL_COLUMNS, then `analysis` where the query wants
    it; columns after those are not the call's. By position: twice as fast as by name."""
    return CallRecord(*row[:_RECORD_FIELD_COUNT])


def _candidates(call: NewCall) -> str:
    return json.dumps([candidate_json(c) for c in call.candidates])


def _columns(calls: Sequence[NewCall]) -> list[list[Any]]:
    """RECORD_CALLS' parameters: one array per field, one element per call."""
    return [
        [c.call_id for c in calls],
        [c.provider for c in calls],
        [c.provider_call_id for c in calls],
        [c.channel for c in calls],
        [c.from_number for c in calls],
        [c.routing_revision for c in calls],
        [c.started_at for c in calls],
        [c.drawn for c in calls],
        [c.remember for c in calls],
        [_candidates(c) for c in calls],
    ]


async def _record_batch(conn: asyncpg.Connection, calls: Sequence[NewCall]) -> list[CallRecord]:
    rows = await conn.fetch(RECORD_CALLS, *_columns(calls))
    return [call_record(row) for row in rows]


async def _record_each(
    conn: asyncpg.Connection, calls: Sequence[NewCall]
) -> list[CallRecord | Exception]:
    """The batch call by call in one transaction, a savepoint each, so a bad call does not sink
    the others: three round trips a call, only after the one-statement batch failed."""
    results: list[CallRecord | Exception] = []
    async with conn.transaction():
        for call in calls:
            try:
                async with conn.transaction():
                    results.extend(await _record_batch(conn, [call]))
            except asyncpg.NoDataFoundError:
                results.append(CallNotRecorded(f"call {call.provider_call_id} matched no variant"))
            except Exception as exc:
                # Postgres unavailable: the caller spools the whole batch rather than redo it.
                if not is_data_error(exc):
                    raise
                results.append(exc)
    return results


async def record_calls(
    pool: asyncpg.Pool, calls: Sequence[NewCall]
) -> list[CallRecord | Exception]:
    """Record `calls` with one statement (one round trip, one commit); each call gets its row,
    the existing one for a provider retry, or the error that kept it out. When the statement
    fails on data, the batch is redone call by call (`_record_each`) to tell the bad calls
    apart; any other failure raises (within WRITE_BUDGET_S: the commit may have landed or not)."""
    order = sorted(range(len(calls)), key=lambda i: _lock_order(calls[i]))
    ordered = [calls[i] for i in order]
    async with connection(pool, WRITE_BUDGET_S) as conn:
        try:
            # Outside a transaction block the statement commits itself: no BEGIN, no COMMIT.
            results: list[CallRecord | Exception] = list(await _record_batch(conn, ordered))
        except Exception as exc:
            if not is_data_error(exc):
                raise
            results = await _record_each(conn, ordered)
    in_order: list[CallRecord | Exception] = list(results)
    for position, index in enumerate(order):
        in_order[index] = results[position]
    return in_order


@dataclass(frozen=True)
class EndedCall:
    """A call a CallEnd closed: what it was served and how long it lasted."""

    agent_id: str
    version: int | None
    duration_s: float


async def end_call(pool: asyncpg.Pool, end: CallEnd) -> EndedCall | None:
    """Close a call; an ending for a call not recorded yet is kept until it is. None when the
    call was not open (unknown yet, or already ended)."""
    args = (end.provider, end.provider_call_id, end.status, end.ended_at, end.duration_s)
    async with connection(pool, WRITE_BUDGET_S) as conn, conn.transaction():
        row = await conn.fetchrow(END_CALL, *args)
        if row is not None:
            return EndedCall(row["agent_id"], row["version"], row["duration_s"])
        await conn.execute(KEEP_EARLY_ENDING, *args)
        return None


async def set_status(pool: asyncpg.Pool, provider: str, provider_call_id: str, status: str) -> None:
    """A progress status (ringing, in-progress...) for a call that has not ended."""
    async with connection(pool, WRITE_BUDGET_S) as conn:
        await conn.execute(SET_STATUS, provider, provider_call_id, status)


async def get_call(pool: asyncpg.Pool | asyncpg.Connection, call_id: str) -> CallRecord:
    row = await pool.fetchrow(SELECT_CALL, call_id)
    if row is None:
        raise CallNotFound(f"no call {call_id}")
    return call_record(row)


async def find_call(pool: asyncpg.Pool | asyncpg.Connection, ref: CallRef) -> CallRecord:
    """The call `ref` names, either way; CallNotFound listing the accepted forms."""
    row = await pool.fetchrow(SELECT_CALL_REF, *ref.args())
    if row is None:
        raise ref.not_found()
    return call_record(row)


async def find_assignment(
    pool: asyncpg.Pool | asyncpg.Connection, number: str, caller: str
) -> str | None:
    """The variant label remembered for `caller` on channel `number`."""
    label: str | None = await pool.fetchval(SELECT_ASSIGNMENT, number, caller)
    return label


def _filter_args(where: CallFilter) -> tuple[Any, ...]:
    return (
        where.agent_id,
        where.draft,
        where.version,
        where.variant,
        where.channel,
        where.since,
        where.until,
        where.status,
        where.sentiment,
        where.automated,
        where.provider,
        where.provider_call_id,
        where.agents,
    )


async def list_calls(
    pool: asyncpg.Pool, where: CallFilter, *, limit: int, cursor: str | None = None
) -> tuple[list[CallRecord], str | None]:
    """Calls newest first, filtered, paginated."""
    after = decode_cursor(cursor, (str, str))
    after_started = cursor_time(after[0]) if after else None
    rows = await pool.fetch(
        LIST_CALLS,
        *_filter_args(where),
        after_started,
        after[1] if after else None,
        limit + 1,
    )
    return page(
        [call_record(r) for r in rows],
        limit,
        lambda c: [c.started_at.isoformat(), c.call_id],
    )


async def count_calls(pool: asyncpg.Pool, where: CallFilter) -> tuple[int, bool]:
    """How many calls match, and whether that is exact: counting stops at MAX_CALL_COUNT + 1,
    and a count past the cap is reported as the cap, not exact."""
    found: int = await pool.fetchval(COUNT_CALLS, *_filter_args(where), MAX_CALL_COUNT + 1)
    return min(found, MAX_CALL_COUNT), found <= MAX_CALL_COUNT

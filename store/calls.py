"""Call records: written once per provider call (group-committed), ended, listed, looked up."""

from __future__ import annotations

import operator
import secrets
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple, get_args

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
# A batch of calls in one set-based statement (one round trip, one commit; no trigger: the rollups'
# compaction counts the calls later, migration 0015): the caller assignments of the calls that
# remember (store/draw.py keep_or_redraw's rule: the remembered variant while it is among the call's
# live candidates, else the fresh draw), then the calls, each served the chosen candidate. The calls
# travel as parallel arrays, their candidates flattened into parallel arrays tagged with the call's
# ordinal `n`. The agent and config blob a call names must exist (migration 0012: the statement
# checks what the foreign keys did, with the foreign key's error, call_names_nothing's, where one
# does not), unless the caller knows the pair exists ($3 lists those candidates: `Known`).
# An ending that arrived before the call is applied on the way in. A call's key goes into
# call_keys first (migration 0011: `calls` is partitioned by time, so its own unique constraints
# cannot span months); a provider retry inserts no key, hence no row, and returns nothing
# (`record_calls` reads its row). Only what the router does not already know comes back: the chosen
# variant and the status an early ending set.
#
# One statement sees its own rows only where it writes them, so `_rounds` never puts two calls
# with one provider call id, or two remembering calls from one caller to one channel, in one
# statement; rows are written in the order given, which `_lock_order` makes the same for all.
RECORD_CALLS = """
WITH c AS (
    SELECT * FROM unnest($1::record_call_input[])
         WITH ORDINALITY AS c(call_id, provider, provider_call_id, channel, from_number,
                              routing_revision, started_at, drawn, remember, n)
), v AS (
    SELECT * FROM unnest($2::record_call_candidate[])
         WITH ORDINALITY AS v(n, label, agent_id, version, draft_revision, config_hash, k)
), live AS MATERIALIZED (
    SELECT c.channel, c.from_number, v.label FROM c JOIN v USING (n) WHERE c.remember
), kept AS (
    INSERT INTO caller_assignments AS a (number, caller, label)
    SELECT channel, from_number, drawn FROM c WHERE remember ORDER BY n
    ON CONFLICT (number, caller) DO UPDATE
    SET label = CASE
            WHEN a.label IN (SELECT label FROM live
                             WHERE channel = EXCLUDED.number AND from_number = EXCLUDED.caller)
            THEN a.label ELSE EXCLUDED.label END,
        updated_at = now()
    RETURNING number, caller, label
), fresh AS (
    INSERT INTO call_keys (provider, provider_call_id, call_id, started_at)
    SELECT provider, provider_call_id, call_id, started_at FROM c ORDER BY n
    ON CONFLICT (provider, provider_call_id) DO NOTHING
    RETURNING call_id
)
INSERT INTO calls (call_id, provider, provider_call_id, channel, from_number, agent_id, version,
                   draft_revision, config_hash, variant, routing_revision, started_at, status,
                   ended_at, duration_s)
SELECT c.call_id, c.provider, c.provider_call_id, c.channel, c.from_number,
       CASE WHEN v.k = ANY($3::bigint[]) THEN v.agent_id
            ELSE coalesce((SELECT id FROM agents WHERE id = v.agent_id),
                          call_names_nothing('agent', v.agent_id)) END,
       v.version, v.draft_revision,
       CASE WHEN v.k = ANY($3::bigint[]) THEN v.config_hash
            ELSE coalesce((SELECT hash FROM config_blobs WHERE hash = v.config_hash),
                          call_names_nothing('config blob', v.config_hash)) END,
       v.label, c.routing_revision, c.started_at,
       coalesce(e.status, 'initiated'), e.ended_at,
       coalesce(e.duration_s,
                CASE WHEN e.ended_at IS NOT NULL
                     THEN greatest(0, extract(epoch FROM e.ended_at - c.started_at)) END)
FROM c
JOIN fresh USING (call_id)
LEFT JOIN kept ON c.remember AND kept.number = c.channel AND kept.caller = c.from_number
JOIN v ON v.n = c.n AND v.label = coalesce(kept.label, c.drawn)
LEFT JOIN call_endings e ON e.provider = c.provider AND e.provider_call_id = c.provider_call_id
ORDER BY c.n
RETURNING provider, provider_call_id, variant, status, ended_at, duration_s
"""
# Where a call's row is, from its key: a partition's primary key (started_at, call_id), found
# by run-time pruning to the one partition holding started_at. By call id, or by provider key.
CALL_BY_ID = "(SELECT started_at FROM call_keys WHERE call_id = $1) AND call_id = $1"
# The rows of calls recorded earlier (provider retries), by (provider, provider call id).
SELECT_CALLS_BY_KEY = (
    "SELECT"
    + CALL_COLUMNS
    + """
FROM unnest($1::text[], $2::text[]) AS k(provider, provider_call_id)
JOIN call_keys USING (provider, provider_call_id)
JOIN calls USING (started_at, call_id, provider, provider_call_id)
"""
)
SELECT_CALL = "SELECT" + CALL_COLUMNS + ", analysis FROM calls WHERE started_at = " + CALL_BY_ID
# A call named by its agentver call id ($1) or by its provider's ($2, $3), the other side NULL:
# found in call_keys (unique both ways), so that only its month's partition is read.
CALL_REF_MATCHES = """(started_at, call_id) = (
    SELECT started_at, call_id FROM call_keys
    WHERE call_id = $1 OR (provider = $2 AND provider_call_id = $3))"""
SELECT_CALL_REF = "SELECT" + CALL_COLUMNS + ", analysis FROM calls WHERE " + CALL_REF_MATCHES
SELECT_ASSIGNMENT = "SELECT label FROM caller_assignments WHERE number = $1 AND caller = $2"

# Endings, closed together as a batch (the router group-commits them, as it does calls): each
# closes its call if it is open (once ended, a call is frozen: duplicate and late events change
# nothing), or, when no call has its key yet, is kept in call_endings, where recording the call
# finds it. One statement, so one round trip and one commit without BEGIN; each ending finds its
# call through call_keys, then its month's partition by its primary key (the partitions of
# other months are pruned at run time). Postgres spent 43 µs of CPU an ending through the
# router's writer at 32 endings in flight, 280 at one a statement, 360 as two statements in a
# transaction (loadtests/README.md). The endings' keys must be distinct (`end_calls_on`).
# Returns the ordinal (from 1) of each ending that closed its call, with what the call was
# served and its duration.
END_CALLS = """
WITH e AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::float8[])
         WITH ORDINALITY AS e(provider, provider_call_id, status, ended_at, duration_s, n)
), k AS MATERIALIZED (
    SELECT e.n, e.status, e.ended_at, e.duration_s, k.started_at, k.call_id
    FROM e JOIN call_keys k USING (provider, provider_call_id)
), ended AS (
    UPDATE calls c
    SET status = k.status, ended_at = k.ended_at,
        duration_s = coalesce(k.duration_s,
                              greatest(0, extract(epoch FROM k.ended_at - c.started_at)))
    FROM k
    WHERE c.started_at = k.started_at AND c.call_id = k.call_id AND c.ended_at IS NULL
    RETURNING k.n, c.agent_id, c.version, c.duration_s
), kept AS (
    INSERT INTO call_endings (provider, provider_call_id, status, ended_at, duration_s)
    SELECT provider, provider_call_id, status, ended_at, duration_s FROM e
    WHERE NOT EXISTS (SELECT 1 FROM k WHERE k.n = e.n)
    ORDER BY n
    ON CONFLICT (provider, provider_call_id) DO NOTHING
)
SELECT n, agent_id, version, duration_s FROM ended
"""
# The upkeep of call_endings (store/partitions.py `maintain`), so that it holds only endings still
# waiting. An ending whose call has a key is spent: the record statement applied it, or left it
# behind in the one race neither statement can see: END_CALLS kept it, finding no key, while the
# call's record was being committed, whose own statement had started before the ending was
# kept, and so recorded the call open. Sent through END_CALLS again, such an ending closes its
# call; a spent one finds its call closed and changes nothing (once ended, a call is frozen).
# The endings are read a batch at a time in key order after the last key of the batch before
# ($2, $3), each with whether it is spent (one probe into call_keys), so that a run reads the
# table once through its primary key however many endings it holds (the first run after an
# upgrade finds every ending kept since the table was created). A join with call_keys instead
# was planned as a nested loop over a range of call_keys, for a misestimated bound: 37 s a
# batch of 1,000 among 300,000 endings.
ENDINGS_AFTER = """
SELECT e.provider, e.provider_call_id, e.status, e.ended_at, e.duration_s,
       EXISTS (SELECT 1 FROM call_keys k
               WHERE k.provider = e.provider AND k.provider_call_id = e.provider_call_id)
FROM call_endings e
WHERE (e.provider, e.provider_call_id) > ($2, $3)
ORDER BY e.provider, e.provider_call_id
LIMIT $1
"""
FORGET_ENDINGS = """
DELETE FROM call_endings e
USING unnest($1::text[], $2::text[]) AS s(provider, provider_call_id)
WHERE e.provider = s.provider AND e.provider_call_id = s.provider_call_id
"""
# Endings that waited $1 days or more for a call that never came (a call answered with the
# fallback is never recorded, yet its provider reports its end), how many.
EXPIRE_ENDINGS = """
WITH gone AS (
    DELETE FROM call_endings WHERE received_at <= now() - make_interval(days => $1) RETURNING 1
)
SELECT count(*) FROM gone
"""
ENDINGS_BATCH = 1000
# Seconds a batch of them may take: no call waits on the upkeep, so a busy Postgres slows it
# rather than failing it (a live batch has WRITE_BUDGET_S).
ENDINGS_BUDGET_S = 10.0
# Progress only moves forward: a late `ringing` never overwrites `in-progress`, and nothing
# overwrites an ending. A status outside this list (a provider's new one) is taken as news.
SET_STATUS = """
UPDATE calls SET status = $3
WHERE (started_at, call_id) = (SELECT started_at, call_id FROM call_keys
                               WHERE provider = $1 AND provider_call_id = $2)
  AND ended_at IS NULL
  AND coalesce(array_position(ARRAY['initiated', 'queued', 'ringing', 'in-progress'], status), 0)
    < coalesce(array_position(ARRAY['initiated', 'queued', 'ringing', 'in-progress'], $3), 5)
"""

# The filters of the call list, its count and the export, $1 to $13 (CallFilter's fields, in
# order, through `_filter_args`).
CALL_FILTER = """
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
    + CALL_FILTER
    + """  AND ($14::timestamptz IS NULL OR (started_at, call_id) < ($14, $15))
ORDER BY started_at DESC, call_id DESC
LIMIT $16
"""
)
# Counting stops at $14 rows, so a total costs at most that many index entries however many
# calls match.
COUNT_CALLS = (
    "SELECT count(*) FROM (SELECT 1 FROM calls"  # noqa: S608 (module constants only)
    + CALL_FILTER
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


# Oldest first, through a server-side cursor.
EXPORT_CALLS = "SELECT" + CALL_COLUMNS + "FROM calls" + CALL_FILTER + "ORDER BY started_at, call_id"
# Rows an export fetches per round trip: a few hundred kilobytes held at a time, whatever the
# number of calls.
EXPORT_PREFETCH = 1000


# What every call builds (Candidate, NewCall, CallRecord; store/call_routing.py's Draw) is
# named tuples: a frozen dataclass sets each field through object.__setattr__, which made
# building them cost four times as much (loadtests/README.md).
class Candidate(NamedTuple):
    """A live variant the call may be served from, with the snapshot it would get."""

    label: str
    agent_id: str
    version: int | None
    draft_revision: int | None
    config_hash: str


class NewCall(NamedTuple):
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


# Bytes of chance in a call id, after the millisecond it was minted.
CALL_ID_BYTES = 12


def new_call_id() -> str:
    """A fresh call id: `call_`, the millisecond (12 hex digits), CALL_ID_BYTES of chance.
    Ids in time order put each new key of call_keys' unique index at its right edge, in pages
    already in memory; random ids put it anywhere in an index as large as the retained
    history (loadtests/README.md, "Call ids in time order")."""
    return "call_" + format(time.time_ns() // 1_000_000, "012x") + secrets.token_hex(CALL_ID_BYTES)


@dataclass(frozen=True)
class CallEnd:
    """A provider's report that a call ended."""

    provider: str
    provider_call_id: str
    status: str
    ended_at: datetime
    duration_s: float | None


class CallRecord(NamedTuple):
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


_RECORD_FIELD_COUNT = len(CallRecord._fields)


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
    """A candidate as the JSON object the spool keeps."""
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


# A call's provider key and its caller on its channel, as _rounds compares them; a candidate's
# label.
_CALL_KEY = operator.itemgetter(1, 2)
_CALLER = operator.itemgetter(3, 4)
_LABEL = operator.attrgetter("label")


def _rounds(calls: Sequence[NewCall]) -> list[list[int]]:
    """The calls' indexes in statements to run one after the other: a call goes in the round
    after the last one holding its provider call id or, when it remembers, its caller on its
    channel, so each statement sees the calls before it as committed rows. Almost every batch
    is one round."""
    callers = [_CALLER(call) for call in calls if call.remember]
    if len(set(map(_CALL_KEY, calls))) == len(calls) and len(set(callers)) == len(callers):
        return [list(range(len(calls)))]  # no key repeats: the usual batch, checked in C
    last: dict[tuple[str, str, bool], int] = {}
    rounds: list[list[int]] = []
    for i, call in enumerate(calls):
        keys = [(call.provider, call.provider_call_id, False)]
        if call.remember:
            keys.append((call.channel, call.from_number, True))
        n = max((last[k] + 1 for k in keys if k in last), default=0)
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(i)
        last.update(dict.fromkeys(keys, n))
    return rounds


# The pairs a Known holds at most (about 150 bytes each): past that it forgets them all and
# learns again, a lookup a pair.
KNOWN_PAIRS = 100_000


class Known:
    """The (agent id, config hash) pairs of calls recorded through it: both exist in the
    database, and neither can go away there (agents are archived, never deleted; config blobs
    never change or go: migrations 0012 and 0001), so a call naming a known pair is recorded
    without looking either up (about 5% of the record statement's CPU at the router's batch
    sizes, loadtests/README.md). The knowledge holds only for the database it came from: `forget` it
    whenever that database may have been replaced (the router does when its change feed's
    connection goes or comes back: a restart, a restore or a failover ends that connection).
    """

    def __init__(self, limit: int = KNOWN_PAIRS) -> None:
        self._pairs: set[tuple[str, str]] = set()
        self._limit = limit

    def __contains__(self, candidate: Candidate) -> bool:
        return (candidate.agent_id, candidate.config_hash) in self._pairs

    def learn(self, results: Sequence[CallRecord | Exception]) -> None:
        """Know the pairs of the calls `results` holds: committed rows, new or earlier."""
        self._pairs.update(
            (r.agent_id, r.config_hash) for r in results if isinstance(r, CallRecord)
        )
        if len(self._pairs) > self._limit:
            self._pairs.clear()

    def forget(self) -> None:
        self._pairs.clear()


def _parameters(
    calls: Sequence[NewCall], known: Known | None = None
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[int]]:
    """RECORD_CALLS' parameters: a row per call (record_call_input), then a row per candidate
    (record_call_candidate), tagged with its call's ordinal, then the ordinals (from 1) of the
    candidates `known`. Rows rather than an array per field: asyncpg's checks of each array
    element cost more than the rows' encoding (0013)."""
    candidates = [(n, v) for n, c in enumerate(calls, 1) for v in c.candidates]
    return (
        [
            (
                c.call_id,
                c.provider,
                c.provider_call_id,
                c.channel,
                c.from_number,
                c.routing_revision,
                c.started_at,
                c.drawn,
                c.remember,
            )
            for c in calls
        ],
        [
            (n, v.label, v.agent_id, v.version, v.draft_revision, v.config_hash)
            for n, v in candidates
        ],
        [k for k, (_, v) in enumerate(candidates, 1) if v in known] if known is not None else [],
    )


def _inserted(call: NewCall, variant: str, status: str, ended: Any, duration: Any) -> CallRecord:
    """The row RECORD_CALLS inserted for `call`, from what the statement returned of it."""
    for v in call.candidates:  # the one served: a loop, not a generator, on every call's path
        if v.label == variant:
            break
    else:  # the statement joins the call to the candidate it records
        raise AssertionError(f"{call.provider_call_id} recorded as {variant}, not a candidate")
    return CallRecord(
        call.call_id,
        call.provider,
        call.provider_call_id,
        call.channel,
        call.from_number,
        v.agent_id,
        v.version,
        v.draft_revision,
        v.config_hash,
        variant,
        call.routing_revision,
        status,
        call.started_at,
        ended,
        duration,
        None,
        None,
    )


async def _record_round(
    conn: asyncpg.Connection, calls: list[NewCall], known: Known | None
) -> list[CallRecord | Exception]:
    """One RECORD_CALLS statement over calls with distinct keys (`_rounds`); a provider retry
    gets the row recorded before, read by a second query (retries are rare)."""
    rows = await conn.fetch(RECORD_CALLS, *_parameters(calls, known))
    inserted = {(r[0], r[1]): r for r in rows}
    keys = [(c.provider, c.provider_call_id) for c in calls]
    earlier = [k for k in keys if k not in inserted]
    found: dict[tuple[str, str], CallRecord] = {}
    if earlier:
        by_key = await conn.fetch(
            SELECT_CALLS_BY_KEY, [k[0] for k in earlier], [k[1] for k in earlier]
        )
        found = {(r[1], r[2]): call_record(r) for r in by_key}
    results: list[CallRecord | Exception] = []
    for call, key in zip(calls, keys, strict=True):
        row = inserted.get(key)
        if row is not None:
            results.append(_inserted(call, *row[2:]))
        else:
            results.append(
                found.get(key) or CallNotRecorded(f"call {key[1]} was neither recorded nor found")
            )
    return results


async def _record_batch(
    conn: asyncpg.Connection, calls: Sequence[NewCall], known: Known | None
) -> list[CallRecord | Exception]:
    """Record `calls` in order, in as few statements as `_rounds` allows; a call drawn a
    variant it was not offered is a CallNotRecorded, and is not sent."""
    results: list[CallRecord | Exception] = [
        CallNotRecorded(f"call {c.provider_call_id} matched no variant") for c in calls
    ]
    for indexes in _rounds(calls):
        sendable = [i for i in indexes if calls[i].drawn in map(_LABEL, calls[i].candidates)]
        if sendable:
            recorded = await _record_round(conn, [calls[i] for i in sendable], known)
            for i, result in zip(sendable, recorded, strict=True):
                results[i] = result
    return results


async def _record_each(
    conn: asyncpg.Connection, calls: Sequence[NewCall], known: Known | None
) -> list[CallRecord | Exception]:
    """The batch call by call in one transaction, a savepoint each, so a bad call does not sink
    the others: a statement or two a call, only after the batch failed."""
    results: list[CallRecord | Exception] = []
    async with conn.transaction():
        for call in calls:
            try:
                async with conn.transaction():
                    results.extend(await _record_batch(conn, [call], known))
            except Exception as exc:
                # Postgres unavailable: the caller spools the whole batch rather than redo it.
                if not is_data_error(exc):
                    raise
                results.append(exc)
    return results


async def record_calls(
    pool: asyncpg.Pool, calls: Sequence[NewCall], within_s: float = WRITE_BUDGET_S
) -> list[CallRecord | Exception]:
    """Record `calls` with one statement (one round trip, one commit) on a pooled connection,
    within `within_s` (see `record_calls_on`)."""
    async with connection(pool, within_s) as conn:
        return await record_calls_on(conn, calls)


async def record_calls_on(
    conn: asyncpg.Connection, calls: Sequence[NewCall], known: Known | None = None
) -> list[CallRecord | Exception]:
    """Record `calls` with one statement (one round trip, one commit); each call gets its row,
    the existing one for a provider retry, or the error that kept it out. When the statement
    fails on data, the batch is redone call by call (`_record_each`) to tell the bad calls
    apart; any other failure raises (the commit may have landed or not). Calls naming a pair
    `known` are not looked up, and `known` learns the pairs of the rows committed."""
    order = sorted(range(len(calls)), key=lambda i: _lock_order(calls[i]))
    ordered = [calls[i] for i in order]
    try:
        # Outside a transaction block the statement commits itself: no BEGIN, no COMMIT.
        results = await _record_batch(conn, ordered, known)
    except Exception as exc:
        if not is_data_error(exc):
            raise
        results = await _record_each(conn, ordered, known)
    if known is not None:
        known.learn(results)
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


async def end_calls_on(
    conn: asyncpg.Connection, endings: Sequence[CallEnd]
) -> list[EndedCall | Exception | None]:
    """Apply `endings` in order, in one statement: each gets the call it closed, None when its
    call was not open (ended already, or not recorded yet: the ending is then kept), or the
    data error that kept it out. An ending repeating an earlier one's key (a provider's
    redelivery) would find the call ended one statement later: None, and it is not sent. When
    the statement fails on data, the endings are applied one by one to tell the bad ones
    apart; any other failure raises (the commit may have landed or not)."""
    first: dict[tuple[str, str], int] = {}
    for i, end in enumerate(endings):
        first.setdefault((end.provider, end.provider_call_id), i)
    sent = [endings[i] for i in first.values()]
    results: list[EndedCall | Exception | None]
    try:
        results = list(await _end_batch(conn, sent))
    except Exception as exc:
        if not is_data_error(exc):
            raise
        # A lone ending is the one refused; more are applied one by one to tell which.
        results = [exc] if len(sent) == 1 else [await _end_alone(conn, end) for end in sent]
    by_index = dict(zip(first.values(), results, strict=True))
    return [by_index.get(i) for i in range(len(endings))]


async def _end_batch(conn: asyncpg.Connection, endings: list[CallEnd]) -> list[EndedCall | None]:
    """END_CALLS over endings with distinct keys."""
    rows = await conn.fetch(
        END_CALLS,
        [e.provider for e in endings],
        [e.provider_call_id for e in endings],
        [e.status for e in endings],
        [e.ended_at for e in endings],
        [e.duration_s for e in endings],
    )
    results: list[EndedCall | None] = [None] * len(endings)
    for n, agent_id, version, duration_s in rows:
        results[n - 1] = EndedCall(agent_id, version, duration_s)
    return results


async def _end_alone(conn: asyncpg.Connection, end: CallEnd) -> EndedCall | Exception | None:
    """One ending in a statement of its own: what it closed, or the data error that refused
    it."""
    try:
        [result] = await _end_batch(conn, [end])
    except Exception as exc:
        if not is_data_error(exc):
            raise
        return exc
    return result


async def end_calls(
    pool: asyncpg.Pool, endings: Sequence[CallEnd], within_s: float = WRITE_BUDGET_S
) -> list[EndedCall | Exception | None]:
    """`end_calls_on` on a pooled connection, within `within_s`."""
    async with connection(pool, within_s) as conn:
        return await end_calls_on(conn, endings)


async def settle_endings(pool: asyncpg.Pool, batch: int = ENDINGS_BATCH) -> tuple[int, int]:
    """Apply the spent endings (ENDINGS_AFTER) again, then delete them, reading `batch` endings
    at a time: how many were deleted, and how many calls they closed. No transaction: an ending
    applied but not yet deleted is applied again, to no effect, by the next run."""
    settled = closed = 0
    after = ("", "")
    while True:
        rows = await pool.fetch(ENDINGS_AFTER, batch, *after)
        spent = [CallEnd(*row[:5]) for row in rows if row[5]]
        if spent:
            results = await end_calls(pool, spent, ENDINGS_BUDGET_S)
            closed += sum(isinstance(r, EndedCall) for r in results)
            await pool.execute(
                FORGET_ENDINGS, [e.provider for e in spent], [e.provider_call_id for e in spent]
            )
            settled += len(spent)
        if len(rows) < batch:
            return settled, closed
        after = (rows[-1][0], rows[-1][1])


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


async def export_calls(
    pool: asyncpg.Pool, where: CallFilter, *, prefetch: int = EXPORT_PREFETCH
) -> AsyncGenerator[CallRecord, None]:
    """Every call `where` selects, oldest first, read through a server-side cursor in one
    read-only transaction (one snapshot, `prefetch` rows in memory at a time). The connection is
    held until the iterator is exhausted or closed: close it (contextlib.aclosing)."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        async for row in conn.cursor(EXPORT_CALLS, *_filter_args(where), prefetch=prefetch):
            yield call_record(row)


def _filter_args(where: CallFilter) -> tuple[Any, ...]:
    """CALL_FILTER's parameters."""
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

"""Group commit of call records: calls that arrive while batches commit share the next commit,
so a burst costs a few fsyncs instead of one per call. A batch is one statement (one round
trip); a few batches commit at once, so their fsyncs overlap.

While Postgres is unavailable (its circuit breaker is open, or a commit fails for want of a
server) a batch goes to the local spool instead, with one fsync for the batch. Spooled calls
are answered from an index by provider call id until they are replayed into Postgres, where
record_call's ON CONFLICT (migration 0004) makes a replay idempotent.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from router.metrics import RouterMetrics
from router.spool import Record, Spool, SpoolFull
from store.breaker import CircuitBreaker
from store.calls import CallRecord, Candidate, NewCall, record_calls
from store.layered import DATABASE_UNAVAILABLE
from store.snapshots import Snapshot

# Calls per transaction: large enough to absorb a burst, small enough to keep one commit short.
MAX_BATCH = 100
# Batches committing at once, each on its own pooled connection (store/db.py sizes the pool for
# them). A commit waits mostly on its fsync: three in flight keep Postgres' WAL writer busy and
# calls from queuing behind one slow fsync, without splitting a burst into tiny batches.
WRITERS = 3
# Calls whose served snapshot a worker remembers (about 300 bytes each): the voice agent asks for
# its call's config seconds after the answer, so this covers well over a minute of calls at the
# worker's peak rate. Older calls, and other workers' calls, are looked up in Postgres.
SERVED_CALLS = 50_000
SPOOL_SCHEMA = 1

log = structlog.get_logger()

Pending = tuple[NewCall, "asyncio.Future[CallRecord]"]
CallKey = tuple[str, str]  # (provider, provider call id)
Result = CallRecord | Exception


def _key(call: NewCall) -> CallKey:
    return call.provider, call.provider_call_id


def served_alone(call: NewCall) -> NewCall:
    """The call pinned to its fresh draw: what is served while Postgres (and so the caller's
    remembered variant) is out of reach. Recording it later records that same variant, and
    makes it the caller's remembered one."""
    drawn = next(c for c in call.candidates if c.label == call.drawn)
    return replace(call, candidates=(drawn,))


def spooled_record(call: NewCall) -> CallRecord:
    """The record a call served alone (`served_alone`) will have once it lands in Postgres."""
    (c,) = call.candidates
    return CallRecord(
        call_id=call.call_id,
        provider=call.provider,
        provider_call_id=call.provider_call_id,
        channel=call.channel,
        from_number=call.from_number,
        agent_id=c.agent_id,
        version=c.version,
        draft_revision=c.draft_revision,
        config_hash=c.config_hash,
        variant=c.label,
        routing_revision=call.routing_revision,
        status="initiated",
        started_at=call.started_at,
        ended_at=None,
        duration_s=None,
        sentiment=None,
        automated=None,
    )


def encode_call(call: NewCall) -> Record:
    """A call as a spool record (schema-versioned JSON object)."""
    return {
        "v": SPOOL_SCHEMA,
        "call_id": call.call_id,
        "provider": call.provider,
        "provider_call_id": call.provider_call_id,
        "channel": call.channel,
        "from_number": call.from_number,
        "routing_revision": call.routing_revision,
        "started_at": call.started_at.isoformat(),
        "drawn": call.drawn,
        "remember": call.remember,
        "candidates": [
            [c.label, c.agent_id, c.version, c.draft_revision, c.config_hash]
            for c in call.candidates
        ],
    }


def decode_call(record: Record) -> NewCall:
    """The call a spool record holds; ValueError (or KeyError, TypeError) when it is not one."""
    if record.get("v") != SPOOL_SCHEMA:
        raise ValueError(f"unknown spool record schema {record.get('v')!r}")
    fields: dict[str, Any] = {k: v for k, v in record.items() if k != "v"}
    fields["started_at"] = datetime.fromisoformat(fields["started_at"])
    fields["candidates"] = tuple(Candidate(*c) for c in fields["candidates"])
    return NewCall(**fields)


def _stopped(batch: list[Pending]) -> None:
    """Fail the calls still waiting in `batch`: the writer is stopping."""
    for _, done in batch:
        if not done.done():
            done.set_exception(RuntimeError("the call writer stopped"))


class CallWriter:
    """Records calls durably; `record` returns once the call is committed or spooled."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        spool: Spool,
        breaker: CircuitBreaker,
        metrics: RouterMetrics,
        max_batch: int = MAX_BATCH,
        writers: int = WRITERS,
    ) -> None:
        self._pool = pool
        self._spool = spool
        self._breaker = breaker
        self._metrics = metrics
        self._max_batch = max_batch
        self._writers = writers
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._spooled: dict[CallKey, CallRecord] = {}
        self._served: OrderedDict[str, Snapshot] = OrderedDict()

    def index(self, records: list[Record]) -> None:
        """Remember spooled calls (a previous run's) so provider retries get the same answer."""
        for record in records:
            call = decode_call(record)
            self._spooled[_key(call)] = spooled_record(call)

    @property
    def spooled(self) -> int:
        """Calls spooled and not yet replayed into Postgres."""
        return len(self._spooled)

    def served(self, call_id: str) -> Snapshot | None:
        """The snapshot this worker recorded (or spooled) `call_id` as served, if it still
        remembers it. Those fields of a call never change, so no invalidation is needed."""
        return self._served.get(call_id)

    def _remember(self, record: CallRecord) -> None:
        self._served[record.call_id] = Snapshot(
            record.agent_id, record.version, record.draft_revision, record.config_hash
        )
        while len(self._served) > SERVED_CALLS:
            self._served.popitem(last=False)

    async def record(self, call: NewCall) -> CallRecord:
        """The durable record of `call`, or of the earlier call with its provider call id."""
        earlier = self._spooled.get(_key(call))
        if earlier is not None:
            return earlier
        done: asyncio.Future[CallRecord] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((call, done))
        return await done

    async def run(self) -> None:
        """Write batches until cancelled: `writers` of them in flight at a time, so their
        commits (and fsyncs) overlap instead of queuing behind each other."""
        try:
            await asyncio.gather(*(self._drain() for _ in range(self._writers)))
        finally:
            _stopped([self._queue.get_nowait() for _ in range(self._queue.qsize())])

    async def _drain(self) -> None:
        """One writer: take what is queued (up to a batch), commit it, repeat."""
        batch: list[Pending] = []
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < self._max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._write(batch)
                batch = []
        finally:
            _stopped(batch)

    async def _write(self, batch: list[Pending]) -> None:
        calls = [call for call, _ in batch]
        results = await self._commit(calls)
        if results is None:
            results = await self._to_spool(calls)
        for (_, done), result in zip(batch, results, strict=True):
            if done.done():
                continue
            if isinstance(result, Exception):
                done.set_exception(result)
            else:
                self._remember(result)
                done.set_result(result)

    async def _commit(self, calls: list[NewCall]) -> list[Result] | None:
        """Each call's committed record or error; None when Postgres is unavailable."""
        if not self._breaker.allow():
            return None
        try:
            results = await record_calls(self._pool, calls)
        except DATABASE_UNAVAILABLE as exc:
            # A commit cut off may or may not have landed: spooling it is safe either way, as
            # the replay inserts nothing for a provider call id already recorded.
            self._breaker.failed()
            log.warning("call_batch_unavailable", calls=len(calls), error=type(exc).__name__)
            return None
        # The writer outlives any failure: each waiting call gets the error and falls back.
        except Exception as exc:
            log.warning("call_batch_failed", calls=len(calls), error=type(exc).__name__)
            return [exc] * len(calls)
        self._breaker.succeeded()
        return results

    async def _to_spool(self, calls: list[NewCall]) -> list[Result]:
        """Spool the calls not spooled yet (one fsync); every call gets its spooled record."""
        fresh: dict[CallKey, NewCall] = {}
        for call in calls:
            if _key(call) not in self._spooled:
                fresh.setdefault(_key(call), served_alone(call))
        try:
            await self._spool.append([encode_call(c) for c in fresh.values()])
        except (SpoolFull, OSError) as exc:
            self._metrics.spool.labels("dropped").inc(len(fresh))
            log.error("call_spool_failed", calls=len(fresh), error=type(exc).__name__)
            return [exc] * len(calls)
        self._metrics.spool.labels("spooled").inc(len(fresh))
        self._spooled.update({key: spooled_record(c) for key, c in fresh.items()})
        return [self._spooled[_key(call)] for call in calls]

    async def replay(self) -> int:
        """Move spooled calls into Postgres; returns how many. Raises (leaving the rest spooled)
        when Postgres is unavailable."""
        return await self._spool.replay(self._replay_segment)

    async def _replay_segment(self, records: list[Record]) -> None:
        calls: list[NewCall] = []
        for record in records:
            try:
                calls.append(decode_call(record))
            except (ValueError, KeyError, TypeError):
                self._metrics.spool.labels("dropped").inc()
                log.error("spool_record_unreadable")
        for start in range(0, len(calls), self._max_batch):
            chunk = calls[start : start + self._max_batch]
            results = await record_calls(self._pool, chunk)
            for call, result in zip(chunk, results, strict=True):
                if isinstance(result, Exception):
                    self._metrics.spool.labels("dropped").inc()
                    log.error("spool_replay_refused", error=type(result).__name__)
                else:
                    self._metrics.spool.labels("replayed").inc()
                self._spooled.pop(_key(call), None)

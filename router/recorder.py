"""Group commit of call records: calls that arrive while batches commit share the next commit,
so a burst costs a few fsyncs instead of one per call. A batch is one statement (one round
trip); one batch commits at a time by default (AGENTVER_CALL_WRITERS), so the calls arriving
meanwhile make the next one.

While Postgres is unavailable (the worker's Postgres breaker is open, or a commit fails for
any reason but a data error, or takes longer than store/db.py's WRITE_BUDGET_S) a batch goes to
the local spool instead, with one fsync for the batch. Spooled calls are answered from an index
by provider call id until they are replayed into Postgres, where RECORD_CALLS' ON CONFLICT
(store/calls.py) makes a replay idempotent; a retry reaching another worker is answered from
the claim the spooling worker took in Redis (router/claims.py). A background loop
(`replay_forever`) replays the spool once Postgres is back.

Call endings are group-committed the same way, by a writer of their own (so that a batch of
calls, whose callers wait for their answers, never waits for a batch of endings): one statement
a batch, spooled while Postgres is unavailable, applied by the replay in a statement a segment;
END_CALLS is idempotent too (it only closes an open call, and keeps an ending for a call not
recorded yet until the call's record finds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg
import structlog

from router.claims import CallClaims, CallKey
from router.metrics import RouterMetrics
from router.served import ServedSnapshots
from router.spool import Record, Spool, SpoolFull, decode_record, encode_call, encode_ending
from store.calls import (
    CallEnd,
    CallRecord,
    EndedCall,
    Known,
    NewCall,
    end_calls,
    end_calls_on,
    record_calls,
    record_calls_on,
    set_status,
)
from store.db import (
    WRITE_BUDGET_S,
    DatabaseUnavailable,
    KeptConnection,
    PostgresGuard,
)

# Calls per transaction: large enough to absorb a burst, small enough to keep one commit short.
MAX_BATCH = 100
# Batches committing at once, each on its own pooled connection, unless AGENTVER_CALL_WRITERS
# (store/settings.py) says otherwise. With one, the calls that arrive during a commit make the
# next batch, so batches grow with the load and Postgres' CPU per call falls: at 32 and 128
# connections, 15.7 and 63 calls a batch against 10 and 30.5 with three writers, the same
# throughput, 15-25% less Postgres CPU per call (loadtests/README.md).
WRITERS = 1
# Seconds a writer keeps its pooled connection with no batch to write. Under a steady load, even
# a light one (100 calls/s), every batch finds it kept and saves an acquire and a release
# (loadtests/README.md, the writer alone); an idle worker gives it back to the cache misses.
KEEP_IDLE_S = 0.01
# Seconds between attempts to replay the spool: a recovered Postgres gets its records soon,
# and an idle worker does one directory listing per second.
SPOOL_REPLAY_INTERVAL_S = 1.0
# Seconds a replayed batch (or ending) may take. No call waits on a replay, so it gets more than
# a live batch's WRITE_BUDGET_S: a busy Postgres (or a busy machine) then slows the replay down
# rather than failing it, while a partitioned one still gives the connection up.
REPLAY_BUDGET_S = 5.0

log = structlog.get_logger()

Pending = tuple[NewCall, "asyncio.Future[CallRecord]"]
Ending = tuple[CallEnd, "asyncio.Future[EndedCall | None]"]
Result = CallRecord | Exception
T = TypeVar("T")
R = TypeVar("R")
Item = TypeVar("Item", Pending, Ending)


class _Unavailable:
    """What `_attempt` returns when Postgres is unavailable (None is an ending's result)."""


UNAVAILABLE = _Unavailable()


def _key(call: NewCall) -> CallKey:
    return call.provider, call.provider_call_id


def pinned_to_draw(call: NewCall) -> NewCall:
    """The call pinned to its fresh draw: what is served while Postgres (and so the caller's
    remembered variant) is out of reach. Recording it later records that same variant, and
    makes it the caller's remembered one."""
    drawn = next(c for c in call.candidates if c.label == call.drawn)
    return call._replace(candidates=(drawn,))


def spooled_record(call: NewCall) -> CallRecord:
    """The record a call pinned to its draw (`pinned_to_draw`) will have once it lands in
    Postgres."""
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


def _check_served_as_recorded(spooled: NewCall, recorded: CallRecord) -> None:
    """Log a spooled call whose record says it was served otherwise: its cut-off commit had
    landed, with the caller's remembered variant, while the caller was answered from the
    spool with the fresh draw (docs/design.md section 6)."""
    (served,) = spooled.candidates
    as_served = (served.label, served.config_hash)
    if (
        recorded.call_id == spooled.call_id
        and (recorded.variant, recorded.config_hash) != as_served
    ):
        log.warning(
            "spooled_call_recorded_otherwise",
            call_id=recorded.call_id,
            served=served.label,
            recorded=recorded.variant,
        )


async def _record(kept: KeptConnection, calls: list[NewCall], known: Known | None) -> list[Result]:
    """The calls recorded on the writer's kept connection, within WRITE_BUDGET_S."""
    return await kept.run(WRITE_BUDGET_S, lambda conn: record_calls_on(conn, calls, known))


async def _end(kept: KeptConnection, endings: list[CallEnd]) -> list[EndedCall | Exception | None]:
    """The endings applied on the endings writer's kept connection, within WRITE_BUDGET_S."""
    return await kept.run(WRITE_BUDGET_S, lambda conn: end_calls_on(conn, endings))


def _settle(
    batch: Sequence[tuple[object, asyncio.Future[R]]], results: Sequence[R | Exception]
) -> None:
    """Give each call (or ending) of `batch` still waiting its result, or its error."""
    for (_, done), result in zip(batch, results, strict=True):
        if done.done():
            continue
        if isinstance(result, Exception):
            done.set_exception(result)
        else:
            done.set_result(result)


def _fail_waiting(batch: Sequence[tuple[object, asyncio.Future[Any]]]) -> None:
    """Fail the calls (or endings) still waiting in `batch`: the writer is stopping."""
    for _, done in batch:
        if not done.done():
            done.set_exception(RuntimeError("the call writer stopped"))


class CallWriter:
    """Records calls durably; `record` returns once the call is committed or spooled."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        spool: Spool,
        guard: PostgresGuard,
        metrics: RouterMetrics,
        claims: CallClaims | None = None,
        max_batch: int = MAX_BATCH,
        writers: int = WRITERS,
        known: Known | None = None,
    ) -> None:
        self._pool = pool
        # None for a lone worker: its spool index alone answers provider retries.
        self._claims = claims
        self._spool = spool
        self._guard = guard
        self._metrics = metrics
        self._max_batch = max_batch
        self._writers = writers
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._endings: asyncio.Queue[Ending] = asyncio.Queue()
        self._spooled: dict[CallKey, CallRecord] = {}
        # The agents and config blobs its calls named, not looked up again (store/calls.py),
        # kept by whoever forgets them when the database may have changed: the router's change
        # feed. Without one, every call's are looked up.
        self._known = known
        self.served = ServedSnapshots()

    def index(self, records: list[Record]) -> None:
        """Remember spooled calls (a previous run's) so provider retries get the same answer.
        Endings need no index, and an unreadable record is counted when the replay meets it."""
        for record in records:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                call = decode_record(record)
                if isinstance(call, NewCall):
                    self._spooled[_key(call)] = spooled_record(call)

    @property
    def spooled(self) -> int:
        """Calls spooled and not yet replayed into Postgres."""
        return len(self._spooled)

    async def record(self, call: NewCall) -> CallRecord:
        """The durable record of `call`, or of the earlier call with its provider call id."""
        earlier = self._spooled.get(_key(call))
        if earlier is not None:
            return earlier
        done: asyncio.Future[CallRecord] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((call, done))
        return await done

    async def run(self) -> None:
        """Write batches until cancelled: `writers` of calls in flight at a time, so their
        commits (and fsyncs) overlap instead of queuing behind each other, and one of endings."""
        calls = (self._drain(self._queue, self._write) for _ in range(self._writers))
        try:
            await asyncio.gather(*calls, self._drain(self._endings, self._write_endings))
        finally:
            _fail_waiting([self._queue.get_nowait() for _ in range(self._queue.qsize())])
            _fail_waiting([self._endings.get_nowait() for _ in range(self._endings.qsize())])

    async def _drain(
        self,
        queue: asyncio.Queue[Item],
        write: Callable[[list[Item], KeptConnection], Awaitable[None]],
    ) -> None:
        """One writer: take what is queued (up to a batch), commit it, repeat."""
        batch: list[Item] = []
        kept = KeptConnection(self._pool, KEEP_IDLE_S)
        try:
            while True:
                batch = [await queue.get()]
                while len(batch) < self._max_batch and not queue.empty():
                    batch.append(queue.get_nowait())
                await write(batch, kept)
                batch = []
        finally:
            _fail_waiting(batch)
            await kept.close()

    async def _write(self, batch: list[Pending], kept: KeptConnection) -> None:
        self._metrics.batch_size.observe(len(batch))
        calls = [call for call, _ in batch]
        started = time.perf_counter()
        results = await self._commit(calls, kept)
        if results is None:
            results = await self._to_spool(calls)
        else:
            self._metrics.commit.observe(time.perf_counter() - started)
        for result in results:
            if not isinstance(result, Exception):
                self.served.remember(result)
        _settle(batch, results)

    async def _attempt(self, query: Callable[[], Awaitable[T]], event: str) -> T | _Unavailable:
        """The query's result; UNAVAILABLE (logged as `event`) when Postgres is: its breaker is
        open, or the query failed for any reason but a data error. Data errors propagate."""
        try:
            return await self._guard.run(query)
        except DatabaseUnavailable as exc:
            log.warning(event, error=type(exc.__cause__ or exc).__name__)
            return UNAVAILABLE

    async def _commit(self, calls: list[NewCall], kept: KeptConnection) -> list[Result] | None:
        """Each call's committed record or error; None when Postgres is unavailable.

        A commit cut off (a lost connection, WRITE_BUDGET_S reached) may or may not have
        landed: spooling it is safe either way, as the replay inserts nothing for a provider
        call id already recorded. What the answer and the record may then differ in: nothing,
        for a call that is not sticky by caller or whose caller has no live remembered variant
        (both are its fresh draw). For a caller whose remembered variant is live and differs
        from the draw, the landed row holds the remembered variant (version, config hash), and
        it stays the caller's remembered one, while the call was answered from the spool with
        the draw; the call id is the same. This worker's config lookups give what was served
        while it remembers the call (`served`), and so do provider retries until the replay
        (`_spooled`); after it retries, other workers' lookups and the analytics see the record.
        The replay logs each such call (`spooled_call_recorded_otherwise`)."""
        try:
            results = await self._attempt(
                lambda: _record(kept, calls, self._known), "call_batch_unavailable"
            )
        # A data error the batch could not pin on its calls: the writer outlives it, and each
        # waiting call gets the error and falls back.
        except Exception as exc:
            log.warning("call_batch_failed", calls=len(calls), error=type(exc).__name__)
            return [exc] * len(calls)
        return None if isinstance(results, _Unavailable) else results

    async def _to_spool(self, calls: list[NewCall]) -> list[Result]:
        """Spool the calls not spooled yet (one fsync), but those another worker spooled first
        (their claims say so); every call gets its spooled record."""
        fresh: dict[CallKey, NewCall] = {}
        for call in calls:
            if _key(call) not in self._spooled:
                fresh.setdefault(_key(call), pinned_to_draw(call))
        claims = self._claims
        earlier = await claims.claim([spooled_record(c) for c in fresh.values()]) if claims else {}
        mine = {key: call for key, call in fresh.items() if key not in earlier}
        try:
            if mine:
                await self._spool.append([encode_call(c) for c in mine.values()])
        except (SpoolFull, OSError) as exc:
            self._metrics.spool.labels("dropped").inc(len(mine))
            log.error("call_spool_failed", calls=len(mine), error=type(exc).__name__)
            if claims:
                await claims.release(list(mine))
            return [earlier.get(_key(call), exc) for call in calls]
        self._metrics.spool.labels("spooled").inc(len(mine))
        self._spooled.update({key: spooled_record(c) for key, c in mine.items()})
        return [earlier.get(_key(call)) or self._spooled[_key(call)] for call in calls]

    async def end(self, ending: CallEnd) -> EndedCall | None:
        """Close the call, in one statement with the endings that arrive meanwhile: in
        Postgres, or, while it is unavailable, by spooling the batch of endings for the replay
        (one fsync). None when the call was not open, or the ending was spooled. Raises when it
        could be neither applied nor spooled, so the provider sees an error and may retry."""
        done: asyncio.Future[EndedCall | None] = asyncio.get_running_loop().create_future()
        self._endings.put_nowait((ending, done))
        return await done

    async def _write_endings(self, batch: list[Ending], kept: KeptConnection) -> None:
        endings = [ending for ending, _ in batch]
        # end_calls_on pins every data error on its ending, and the guard takes any other
        # failure for Postgres unavailable: nothing raises here.
        attempted = await self._attempt(lambda: _end(kept, endings), "call_ending_unavailable")
        if isinstance(attempted, _Unavailable):
            attempted = await self._spool_endings(endings)
        _settle(batch, attempted)

    async def _spool_endings(self, endings: list[CallEnd]) -> list[EndedCall | Exception | None]:
        """The endings spooled for the replay (one fsync): None each, or the error that kept
        them out of the spool."""
        try:
            await self._spool.append([encode_ending(ending) for ending in endings])
        except (SpoolFull, OSError) as exc:
            self._metrics.spool.labels("dropped").inc(len(endings))
            log.error("call_ending_spool_failed", endings=len(endings), error=type(exc).__name__)
            return [exc] * len(endings)
        self._metrics.spool.labels("spooled").inc(len(endings))
        return [None] * len(endings)

    async def progress(self, provider: str, provider_call_id: str, status: str) -> None:
        """Note a progress status (ringing, in-progress...) of a call. While Postgres is
        unavailable it is dropped, not spooled: the call's ending supersedes it (it is ended
        soon anyway, and an ended call ignores progress), so spooling it would spend an fsync
        per event on a status nobody reads once the call is over."""
        await self._attempt(
            lambda: set_status(self._pool, provider, provider_call_id, status),
            "call_progress_unavailable",
        )

    async def replay_forever(self) -> None:
        """Replay the spool every SPOOL_REPLAY_INTERVAL_S while it holds anything, until
        cancelled."""
        while True:
            await asyncio.sleep(SPOOL_REPLAY_INTERVAL_S)
            if self._spooled or self._spool.pending_bytes():
                await self.try_replay()

    async def try_replay(self) -> None:
        """One attempt to move the spool into Postgres, unless Postgres is known to be down.
        Never raises: what is not replayed stays spooled for the next attempt."""
        try:
            replayed = await self._attempt(self.replay, "spool_replay_unavailable")
        except Exception:
            log.exception("spool_replay_failed")
            return
        if not isinstance(replayed, _Unavailable) and replayed:
            log.info("spool_replayed", records=replayed)

    async def replay(self) -> int:
        """Move spooled calls into Postgres; returns how many. Raises (leaving the rest spooled)
        when Postgres is unavailable."""
        return await self._spool.replay(self._replay_segment)

    async def _replay_segment(self, records: list[Record]) -> None:
        """Record the segment's calls, then apply its endings: an ending then finds its call
        when both were spooled together. One whose call is elsewhere (another worker's segment,
        or not written yet) is kept by END_CALLS until the call's record applies it."""
        calls: list[NewCall] = []
        endings: list[CallEnd] = []
        for record in records:
            try:
                item = decode_record(record)
            except (ValueError, KeyError, TypeError):
                self._metrics.spool.labels("dropped").inc()
                log.error("spool_record_unreadable")
                continue
            if isinstance(item, NewCall):
                calls.append(item)
            else:
                endings.append(item)
        await self._replay_calls(calls)
        await self._replay_endings(endings)

    async def _replay_endings(self, endings: list[CallEnd]) -> None:
        """Apply spooled endings, a batch a statement; one Postgres refuses (bad data) is
        dropped, not retried forever, while any other failure stops the replay."""
        for start in range(0, len(endings), self._max_batch):
            chunk = endings[start : start + self._max_batch]
            results = await end_calls(self._pool, chunk, REPLAY_BUDGET_S)
            for result in results:
                if isinstance(result, Exception):
                    self._metrics.spool.labels("dropped").inc()
                    log.error("spool_replay_refused", error=type(result).__name__)
                else:
                    self._metrics.observe_ended(result)
                    self._metrics.spool.labels("replayed").inc()

    async def _replay_calls(self, calls: list[NewCall]) -> None:
        for start in range(0, len(calls), self._max_batch):
            chunk = calls[start : start + self._max_batch]
            results = await record_calls(self._pool, chunk, REPLAY_BUDGET_S)
            for call, result in zip(chunk, results, strict=True):
                if isinstance(result, Exception):
                    self._metrics.spool.labels("dropped").inc()
                    log.error("spool_replay_refused", error=type(result).__name__)
                else:
                    self._metrics.spool.labels("replayed").inc()
                    _check_served_as_recorded(call, result)
                self._spooled.pop(_key(call), None)

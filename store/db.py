"""The asyncpg connection pool, with jsonb decoded to Python values; and how work on a call's
behalf treats a Postgres that fails: any failure but a data error means "unavailable", a
connection that failed is never reused, every wait is bounded, and one breaker per worker stops
calls from each waiting on a Postgres known to be down."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import structlog
from asyncpg.exceptions import _base as asyncpg_base

from store.breaker import CircuitBreaker
from store.errors import StoreError

T = TypeVar("T")

# A router worker holds one connection per call writer (AGENTVER_CALL_WRITERS, 1 by default;
# kept between batches, given back once the writer idles), one for the writer of call endings
# and one for the spool replay; the rest serve cache misses and runtime lookups, which are
# single short queries, so the 7 left with one writer absorb a burst of misses without queuing
# behind the commits. Bounded so many workers never exhaust Postgres' max_connections (100 by
# default): 8 workers take 80. Admin traffic is light and shares the same bound.
POOL_MIN_SIZE = 4
POOL_MAX_SIZE = 10
# Seconds a closing pool waits for its connections to be released: past it they are terminated,
# so that one a task never gave back cannot hold a worker's shutdown (or a test's) for ever.
POOL_CLOSE_S = 10.0

log = structlog.get_logger()

# Seconds a batch of call records may take to commit, the wait for a pooled connection included.
# Measured on the shared two-core test machine (load average 3.5), three writers committing back
# to back: 10-call batches (100 calls/s) p99 40 ms, max 55 ms; 100-call batches (a burst) p50
# 74 ms, p99 235 ms, max 260 ms. Twice the worst of those, and half the providers' budget: a
# batch cut off is spooled, and calls are answered within a second while Postgres is out of
# reach (docs/design.md section 6).
WRITE_BUDGET_S = 0.5
# Seconds a read on a call's behalf (a cache miss, a token, a call's config) may take: one or
# two indexed single-row queries, measured p99.9 17 ms on the same machine.
READ_BUDGET_S = 0.25
# Failures that open the Postgres breaker: the first. Unlike a Redis miss, a failure here has
# already made its callers wait (up to a budget above), and until the breaker opens every batch
# a free writer picks up waits as long; a failure of a healthy server (one commit slower than
# the budget) costs only a second of spooling, still answered and recorded.
FAILURES_TO_OPEN = 1

# Errors in a query's own data or SQL, and the store's domain answers (a not-found is an
# answer): they recur on every retry, so they are the caller's to handle. Any other failure
# (refused, reset or cut-off connections, "terminating connection due to administrator command",
# "the database system is shutting down", a connection left mid-operation, a pool acquire or a
# query out of time, a server out of connections) means Postgres cannot serve the work now.
DATA_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.DataError,  # class 22: a value out of range, malformed, too long
    asyncpg.IntegrityConstraintViolationError,  # class 23
    asyncpg.CardinalityViolationError,  # class 21
    asyncpg.SyntaxOrAccessError,  # class 42: the SQL, or a missing table or function
    asyncpg.PLPGSQLError,  # class P0: raised by our functions (a partition bound refused)
    asyncpg.ProgramLimitExceededError,  # class 54: a statement too large
    # A parameter asyncpg refused to encode, before sending anything: its client-side DataError,
    # which the package's namespace shadows with the server's class 22 above.
    asyncpg_base.DataError,
    StoreError,
)


def is_data_error(exc: BaseException) -> bool:
    """Whether a failed database operation failed on its own data or SQL (see DATA_ERRORS),
    rather than for want of a server that can serve it."""
    return isinstance(exc, DATA_ERRORS)


class DatabaseUnavailable(Exception):
    """Postgres could not serve the work (see DATA_ERRORS), or is known to be down."""


# What an HTTP handler turns into a 503 (httpkit/errors.py): Postgres out of reach, for work
# done through a PostgresGuard (DatabaseUnavailable) or without one (admin requests).
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    DatabaseUnavailable,
    OSError,  # TimeoutError included
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.InterfaceError,
    # A pooled connection the server closed while it sat idle (a Postgres stop or restart): its
    # FATAL message is read a loop iteration before its end, and a query sent in between finds
    # the connection "in another operation".
    asyncpg.InternalClientError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Nothing to reset when a connection returns to the pool: no caller leaves session state
    behind (LISTEN and the migration's advisory lock use connections of their own; SET LOCAL
    and xact locks end with their transaction, which asyncpg rolls back if left open). The
    default reset costs a round trip on every release. A connection whose work failed for any
    reason but a data error never comes back: `connection` terminates it."""


async def create_pool(database_url: str, **overrides: Any) -> asyncpg.Pool:
    """A pool whose connections speak jsonb as Python dicts and lists."""
    options: dict[str, Any] = {
        "min_size": POOL_MIN_SIZE,
        "max_size": POOL_MAX_SIZE,
        "init": _init_connection,
        "reset": _keep_session,
    }
    options.update(overrides)
    pool = await asyncpg.create_pool(database_url, **options)
    assert pool is not None
    return pool


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close `pool`, terminating its connections if they are not all released in POOL_CLOSE_S."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_S)
    except TimeoutError:
        log.warning("pool_close_timed_out", seconds=POOL_CLOSE_S)
        pool.terminate()


async def with_pool(database_url: str, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Run one command's `work` on a small pool of its own, closed afterwards."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        return await work(pool)
    finally:
        await pool.close()


async def every(interval_s: float, work: Callable[[], Awaitable[object]], failed: str) -> None:
    """Run `work` every `interval_s` seconds until cancelled (an admin service's upkeep). A run
    that fails for any reason is logged as `failed` and the next starts over: Postgres goes away
    in more ways than DATABASE_UNAVAILABLE names at any one time, and a failure escaping here
    would end the upkeep until the process restarts."""
    while True:
        try:
            await work()
        except Exception as exc:
            log.warning(failed, error=repr(exc))
        await asyncio.sleep(interval_s)


def _discard(conn: asyncpg.Connection) -> None:
    """Terminate a pooled connection; the pool replaces it on a later acquire."""
    # A connection that closed already has left the pool, and its proxy refuses every call.
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


class _Budget:
    """The deadline of work on a connection (see `connection`): past it the connection is
    terminated; work that failed for any reason but a data error terminates it too."""

    __slots__ = ("_conn", "_expired", "_timer")

    def __init__(self, conn: asyncpg.Connection, deadline: float) -> None:
        self._conn = conn
        self._expired = False
        self._timer = asyncio.get_running_loop().call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._expired = True
        _discard(self._conn)

    def failed(self, exc: BaseException, within_s: float) -> None:
        """Work on the connection raised `exc`: terminate the connection unless `exc` is a data
        error; raise TimeoutError (from `exc`) if the deadline cut it off."""
        if not is_data_error(exc):
            _discard(self._conn)
        if self._expired:
            raise TimeoutError(f"the database work took over {within_s} s") from exc

    def end(self) -> None:
        self._timer.cancel()


@contextlib.asynccontextmanager
async def connection(pool: asyncpg.Pool, within_s: float) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for work that must be over within `within_s` seconds, the wait for
    the connection included; TimeoutError past it.

    Past the deadline the connection is terminated, not cancelled: asyncpg answers a cancelled
    query by sending a cancel request on a new connection and makes the next use of this one
    (a ROLLBACK, the release) wait for it, which a partitioned network never lets finish. A
    terminated connection fails whatever waits on it at once. Work that fails for any reason but
    a data error terminates its connection too, since it may be left mid-operation (asyncpg's
    "cannot switch to state ...; another operation is in progress" for the next user), and the
    pool's reset is a no-op (`_keep_session`); the pool replaces it on a later acquire.
    """
    deadline = asyncio.get_running_loop().time() + within_s
    async with pool.acquire(timeout=within_s) as conn:
        budget = _Budget(conn, deadline)
        try:
            yield conn
        except BaseException as exc:
            budget.failed(exc, within_s)
            raise
        finally:
            budget.end()


def _open(conn: asyncpg.Connection) -> bool:
    """Whether a pooled connection is still open and ours: one whose server closed it has been
    handed back to the pool by asyncpg, and its proxy refuses every call."""
    try:
        return not conn.is_closed()
    except asyncpg.InterfaceError:
        return False


class KeptConnection:
    """A pooled connection kept between one task's pieces of work that come back to back (a
    call writer's batches), so that each does not pay for an acquire and a release: given back
    to the pool once `idle_s` pass with no work, or when the task ends (`close`). Each piece
    follows `connection`'s rules: it must be over within its budget, the acquire included, and
    a connection whose work failed for any reason but a data error is terminated, never used
    again. Pieces run one at a time."""

    def __init__(self, pool: asyncpg.Pool, idle_s: float) -> None:
        self._pool = pool
        self._idle_s = idle_s
        self._conn: asyncpg.Connection | None = None  # kept between pieces, None while in use
        self._idle: asyncio.TimerHandle | None = None
        self._giving_back: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def use(self, within_s: float) -> AsyncIterator[asyncpg.Connection]:
        """The kept connection, or a new one from the pool, for work within `within_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        conn, self._conn = self._conn, None
        if conn is not None and not _open(conn):
            # The server closed it while it was kept (a restart, pg_terminate_backend): the
            # pool replaces it, as it does its own closed connections.
            await self._pool.release(conn)
            conn = None
        if conn is None:
            conn = await self._pool.acquire(timeout=within_s)
        budget = _Budget(conn, deadline)
        try:
            yield conn
        except BaseException as exc:
            budget.end()
            try:
                budget.failed(exc, within_s)
            finally:
                # Terminated (the work failed) or not (a data error): the pool has it back.
                await self._pool.release(conn)
            raise
        budget.end()
        self._conn = conn
        self._idle = loop.call_later(self._idle_s, self._give_back)

    async def run(self, within_s: float, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`work` on the kept connection (`use`), within `within_s`. For compiled callers
        (scripts/compile), which must not hold the `async with` themselves: mypyc corrupts an
        exception from an awaited future that a compiled `async with` re-raises after its exit
        awaited, as `use`'s release does (docs/design.md, section 4)."""
        async with self.use(within_s) as conn:
            return await work(conn)

    def _give_back(self) -> None:
        """Release the kept connection to the pool: no work came for `idle_s`."""
        conn, self._conn, self._idle = self._conn, None, None
        if conn is not None:
            task = asyncio.create_task(self._pool.release(conn))
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)

    async def close(self) -> None:
        """Release the kept connection now, and wait for any idle release under way."""
        if self._idle is not None:
            self._idle.cancel()
        self._give_back()
        await asyncio.gather(*self._giving_back)


async def read(
    pool: asyncpg.Pool,
    query: Callable[[asyncpg.Connection], Awaitable[T]],
    within_s: float = READ_BUDGET_S,
) -> T:
    """`query` run on a pooled connection, within `within_s` seconds (see `connection`)."""
    async with connection(pool, within_s) as conn:
        return await query(conn)


class PostgresGuard:
    """One worker's view of Postgres' health for work on a call's behalf: a breaker that every
    such operation reports to, so once Postgres is found down every caller is told at once
    (DatabaseUnavailable) rather than each waiting out a timeout; a probe a second finds it
    back (store/breaker.py)."""

    def __init__(self, breaker: CircuitBreaker | None = None) -> None:
        self.breaker = breaker or CircuitBreaker(failures_to_open=FAILURES_TO_OPEN)

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """`work`'s result. Its data errors propagate (Postgres answered); any other failure,
        or a breaker open, is DatabaseUnavailable (the failure as its cause)."""
        if not self.breaker.allow():
            raise DatabaseUnavailable("Postgres is down (its breaker is open)")
        try:
            result = await work()
        except Exception as exc:
            if is_data_error(exc):
                self.breaker.succeeded()
                raise
            self.breaker.failed()
            raise DatabaseUnavailable(f"Postgres failed: {type(exc).__name__}") from exc
        self.breaker.succeeded()
        return result

    async def read(
        self, pool: asyncpg.Pool, query: Callable[[asyncpg.Connection], Awaitable[T]]
    ) -> T:
        """`query` on a pooled connection within READ_BUDGET_S, through the breaker."""
        return await self.run(lambda: read(pool, query))


async def ping(pool: asyncpg.Pool, within_s: float) -> None:
    """Raise unless Postgres answers within `within_s` seconds."""
    await read(pool, lambda conn: conn.fetchval("SELECT 1"), within_s)

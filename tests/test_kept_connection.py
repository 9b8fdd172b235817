"""The call writer's kept connection (store/db.py KeptConnection): reused while work comes back
to back, given back to the pool once idle, and under `connection`'s rules otherwise: a
connection whose work failed for any reason but a data error is never used again, the work is
cut off at its budget, and one the server closed while it was kept is replaced, not used."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from router import recorder
from router.spool import Spool
from store.breaker import CircuitBreaker
from store.calls import CallEnd, CallRecord, EndedCall, NewCall, end_calls_on
from store.db import KeptConnection, create_pool
from tests.polling import eventually
from tests.router_fixtures import running_writer

IDLE_S = 0.05
BACKEND = "SELECT pg_backend_pid()"


@pytest.fixture
async def one(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool of one connection: whatever the kept connection does not give back, nobody gets."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    yield pool
    await pool.close()


async def _backend(kept: KeptConnection, within_s: float = 1.0) -> int:
    async with kept.use(within_s) as conn:
        pid: int = await conn.fetchval(BACKEND)
        return pid


async def test_work_back_to_back_keeps_the_connection_and_an_idle_one_goes_back(
    one: asyncpg.Pool,
) -> None:
    kept = KeptConnection(one, IDLE_S)
    first = await _backend(kept)
    assert await _backend(kept) == first
    # Kept: the pool's only connection is not to be had...
    with pytest.raises(TimeoutError):
        await one.acquire(timeout=IDLE_S / 5)
    await asyncio.sleep(IDLE_S * 2)
    # ...until the writer has been idle for IDLE_S: then it is the pool's again, not terminated.
    assert await one.fetchval(BACKEND) == first
    assert await _backend(kept) == first
    await kept.close()
    assert await one.fetchval(BACKEND) == first


@pytest.mark.parametrize(
    ("failure", "reused"),
    [
        (ConnectionResetError(104, "Connection reset by peer"), False),
        (asyncpg.AdminShutdownError("terminating connection"), False),
        (asyncio.CancelledError(), False),
        (asyncpg.InvalidTextRepresentationError("invalid input syntax"), True),
    ],
)
async def test_a_connection_whose_work_failed_is_never_used_again_but_after_a_data_error(
    one: asyncpg.Pool, failure: BaseException, reused: bool
) -> None:
    kept = KeptConnection(one, IDLE_S)
    first = await _backend(kept)
    with pytest.raises(type(failure)):
        async with kept.use(1.0):
            raise failure
    assert (await _backend(kept) == first) == reused
    await kept.close()


async def test_hostile_values_fail_as_data_errors_and_the_connection_serves_on(
    one: asyncpg.Pool,
) -> None:
    kept = KeptConnection(one, IDLE_S)
    first = await _backend(kept)
    for hostile in ["nul\x00byte", "\udcff", "x" * 1_000_000]:
        with pytest.raises((asyncpg.DataError, UnicodeEncodeError, asyncpg.PostgresError)):
            async with kept.use(1.0) as conn:
                await conn.fetchval("SELECT $1::text::integer", hostile)
    assert await _backend(kept) == first
    await kept.close()


async def test_work_past_its_budget_is_cut_off_at_once_and_not_kept(one: asyncpg.Pool) -> None:
    kept = KeptConnection(one, IDLE_S)
    first = await _backend(kept)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with kept.use(0.2) as conn:
            await conn.execute("SELECT pg_sleep(5)")
    assert time.monotonic() - started < 1.0
    assert await _backend(kept) != first
    await kept.close()


async def test_a_kept_connection_the_server_closed_is_replaced_unseen(
    one: asyncpg.Pool, pool: asyncpg.Pool
) -> None:
    kept = KeptConnection(one, 10.0)
    first = await _backend(kept)
    assert await pool.fetchval("SELECT pg_terminate_backend($1)", first)
    await eventually(lambda: _is_gone(pool, first))
    await asyncio.sleep(0.05)  # the client has read the server's goodbye
    assert await _backend(kept) != first
    await kept.close()


async def _is_gone(pool: asyncpg.Pool, pid: int) -> bool:
    return not await pool.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)


async def test_the_writer_records_on_through_hostile_calls_and_hands_its_connection_back(
    one: asyncpg.Pool,
    pool: asyncpg.Pool,
    tmp_path: Path,
    call_to: Callable[[str], NewCall],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recorder, "KEEP_IDLE_S", IDLE_S)
    async with running_writer(one, Spool(tmp_path), CircuitBreaker()) as writer:
        hostile = [call_to("CA\x00nul"), call_to("CA" + "9" * 100_000)]
        answers = await asyncio.gather(
            *(writer.record(c) for c in [*hostile, call_to("CA-ok")]), return_exceptions=True
        )
        assert isinstance(answers[0], Exception)
        recorded = [a.provider_call_id for a in answers[1:] if isinstance(a, CallRecord)]
        assert recorded == ["CA" + "9" * 100_000, "CA-ok"]
        assert (await writer.record(call_to("CA-next"))).provider_call_id == "CA-next"
        assert writer.spooled == 0
        # Idle: the pool's only connection is the pool's again.
        await asyncio.sleep(IDLE_S * 2)
        assert await one.fetchval("SELECT count(*) FROM calls") == 3
    assert await pool.fetchval("SELECT count(*) FROM calls") == 3


async def test_endings_arriving_together_close_their_calls_in_few_statements(
    one: asyncpg.Pool,
    tmp_path: Path,
    call_to: Callable[[str], NewCall],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The endings writer shares the calls writer's pool (here of one connection): thirty
    endings sent at once are group-committed, a hostile one refused on its own, and every call
    is closed once."""
    statements: list[int] = []

    async def counted(conn: asyncpg.Connection, endings: list[CallEnd]) -> Any:
        statements.append(len(endings))
        return await end_calls_on(conn, endings)

    monkeypatch.setattr(recorder, "KEEP_IDLE_S", IDLE_S)
    monkeypatch.setattr(recorder, "end_calls_on", counted)
    async with running_writer(one, Spool(tmp_path), CircuitBreaker()) as writer:
        calls = [call_to(f"CA-end-{n}") for n in range(30)]
        await asyncio.gather(*(writer.record(c) for c in calls))
        endings = [
            CallEnd("twilio", c.provider_call_id, "completed", c.started_at, 0.0) for c in calls
        ]
        hostile = CallEnd("twilio", "CA\x00nul", "completed", calls[0].started_at, 0.0)

        answers = await asyncio.gather(
            *(writer.end(e) for e in [*endings, hostile, endings[0]]), return_exceptions=True
        )

        assert all(isinstance(a, EndedCall) for a in answers[:30])
        assert isinstance(answers[30], asyncpg.DataError)
        assert answers[31] is None  # the same call's second ending, in the same batch
        assert sum(statements) == 32 and len(statements) < 10
        assert await one.fetchval("SELECT count(*) FROM calls WHERE ended_at IS NULL") == 0

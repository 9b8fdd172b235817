"""The spool's file format and segments: framing with CRCs, a torn tail tolerated, rotation,
replay that deletes what it replayed, segments of other live writers left alone, a bound; and
its record kinds (calls and endings), spooled while Postgres is unavailable and replayed."""

from __future__ import annotations

import contextlib
import fcntl
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from harness.redis import delete_prefixed
from router.claims import CallClaims
from router.recorder import CallWriter, spooled_record
from router.spool import (
    HEADER,
    MAX_SPOOL_BYTES,
    Record,
    Spool,
    SpoolFull,
    decode_record,
    decode_records,
    encode_call,
    encode_ending,
    encode_record,
)
from store.breaker import CircuitBreaker
from store.calls import CallEnd, Candidate, NewCall
from store.settings import Settings
from tests.call_rows import STARTED_AT, new_call
from tests.conftest import AgentFactory, Api
from tests.router_fixtures import running_writer


def _segments(directory: Path) -> list[Path]:
    return list(directory.glob("*.spool"))


RECORDS: list[Record] = [{"n": i, "name": f"caller ☎ {i}", "null": None} for i in range(3)]


def test_records_round_trip() -> None:
    data = b"".join(encode_record(r) for r in RECORDS)
    assert decode_records(data) == (RECORDS, False)
    assert decode_records(b"") == ([], False)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d: d[:-1], id="short payload"),
        pytest.param(lambda d: d[: -len(encode_record(RECORDS[2])) + 3], id="short header"),
        pytest.param(lambda d: d[:-2] + b"X" + d[-1:], id="bad crc"),
        pytest.param(lambda d: d + HEADER.pack(1 << 30, 0), id="absurd length"),
    ],
)
def test_a_torn_tail_keeps_the_intact_records(damage: object) -> None:
    data = b"".join(encode_record(r) for r in RECORDS)
    records, torn = decode_records(damage(data))  # type: ignore[operator]
    assert torn and records == RECORDS[: len(records)] and len(records) >= 2


async def test_segments_rotate_and_replay_deletes_them(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=1)
    assert spool.open() == []
    for record in RECORDS:
        await spool.append([record])
    assert len(_segments(tmp_path)) == 3  # each record filled a segment
    seen: list[Record] = []

    async def apply(records: list[Record]) -> None:
        seen.extend(records)

    assert await spool.replay(apply) == 3
    assert seen == RECORDS
    assert _segments(tmp_path) == []
    assert spool.pending_bytes() == 0


async def test_a_failed_replay_keeps_the_segment(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.open()
    await spool.append(RECORDS)

    async def refuse(records: list[Record]) -> None:
        raise OSError("postgres is down")

    with pytest.raises(OSError):
        await spool.replay(refuse)
    # A restarted worker finds the records and replays them.
    spool.close()
    again = Spool(tmp_path)
    assert again.open() == RECORDS
    seen: list[Record] = []

    async def apply(records: list[Record]) -> None:
        seen.extend(records)

    assert await again.replay(apply) == 3 and seen == RECORDS


async def test_a_segment_another_writer_holds_is_left_alone(tmp_path: Path) -> None:
    busy = tmp_path / "00000000000000000001-999.spool"
    busy.write_bytes(encode_record(RECORDS[0]))
    with busy.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        spool = Spool(tmp_path)
        assert spool.open() == []

        async def apply(records: list[Record]) -> None:
            raise AssertionError("replayed a segment in use")

        assert await spool.replay(apply) == 0
    assert busy.exists()


async def test_a_full_spool_refuses(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    spool.open()
    await spool.append([RECORDS[0]])
    with pytest.raises(SpoolFull):
        await spool.append(RECORDS)
    spool.close()


# --- record kinds ------------------------------------------------------------------------------

CANDIDATE = Candidate("a", "agent_1", 1, None, "f" * 64)


def _call(sid: str, candidate: Candidate = CANDIDATE) -> NewCall:
    return new_call(sid, candidate.label, (candidate,), remember=False)


def _ending(sid: str, duration_s: float | None = 42.0) -> CallEnd:
    return CallEnd("twilio", sid, "completed", STARTED_AT + timedelta(minutes=1), duration_s)


def _legacy(call: NewCall) -> Record:
    """A call as spooled before endings were: no kind."""
    record = encode_call(call)
    del record["kind"]
    return record


@pytest.mark.parametrize(
    "item", [_call("CA-1"), _ending("CA-1"), _ending("CA-1", None)], ids=["call", "ending", "null"]
)
def test_calls_and_endings_round_trip_through_the_spool_format(item: NewCall | CallEnd) -> None:
    record = encode_call(item) if isinstance(item, NewCall) else encode_ending(item)
    (decoded,), torn = decode_records(encode_record(record))
    assert not torn and decode_record(decoded) == item


def test_a_call_spooled_before_endings_were_still_reads_as_a_call() -> None:
    assert decode_record(_legacy(_call("CA-old"))) == _call("CA-old")


def test_candidates_are_spooled_as_objects() -> None:
    assert encode_call(_call("CA-1"))["candidates"] == [
        {
            "label": "a",
            "agent_id": "agent_1",
            "version": 1,
            "draft_revision": None,
            "config_hash": "f" * 64,
        }
    ]


def test_a_call_spooled_with_positional_candidates_still_reads() -> None:
    """Spooled before candidates were objects: [label, agent_id, version, draft_revision,
    config_hash], possibly still on disk after an upgrade."""
    record = {**encode_call(_call("CA-old")), "candidates": [["a", "agent_1", 1, None, "f" * 64]]}
    (decoded,), torn = decode_records(encode_record(record))
    assert not torn and decode_record(decoded) == _call("CA-old")


@pytest.mark.parametrize(
    "record",
    [
        {**encode_ending(_ending("CA-1")), "kind": "transfer"},
        {**encode_ending(_ending("CA-1")), "v": 2},
        {**encode_call(_call("CA-1")), "v": None},
        {"v": 1, "kind": "ending", "provider": "twilio"},
        {**encode_ending(_ending("CA-1")), "ended_at": "yesterday"},
    ],
    ids=["unknown kind", "newer schema", "no schema", "missing fields", "bad time"],
)
def test_an_unreadable_record_is_refused(record: Record) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        decode_record(record)


# --- spooled while Postgres is unavailable, then replayed ---------------------------------------


@pytest.fixture
async def candidate(api: Api, make_agent: AgentFactory) -> Candidate:
    agent = await make_agent(versions=1)
    version = await api.ok("GET", f"/v1/agents/{agent['id']}/versions/1")
    return Candidate("a", agent["id"], 1, None, version["config_hash"])


@dataclass(frozen=True)
class Outage:
    """A call writer whose Postgres breaker is open, and stays open (its clock stands still)
    until the test reports a success (unless it was made with Postgres up); its spool; and a
    real version for its calls to serve."""

    writer: CallWriter
    breaker: CircuitBreaker
    spool: Spool
    candidate: Candidate

    def call(self, sid: str) -> NewCall:
        return _call(sid, self.candidate)


@contextlib.asynccontextmanager
async def _writer(
    pool: asyncpg.Pool,
    directory: Path,
    candidate: Candidate,
    claims: CallClaims | None = None,
    *,
    down: bool = True,
    spool_bytes: int = MAX_SPOOL_BYTES,
) -> AsyncIterator[Outage]:
    """A running call writer spooling to `directory` (`spool_bytes` at most), Postgres `down`
    for it (see Outage)."""
    breaker = CircuitBreaker(failures_to_open=1, clock=lambda: 0.0)
    if down:
        breaker.failed()
    spool = Spool(directory, max_bytes=spool_bytes)
    async with running_writer(pool, spool, breaker, claims) as writer:
        yield Outage(writer, breaker, spool, candidate)


@pytest.fixture
async def outage(pool: asyncpg.Pool, tmp_path: Path, candidate: Candidate) -> AsyncIterator[Outage]:
    async with _writer(pool, tmp_path, candidate) as outage:
        yield outage


async def test_endings_spooled_in_an_outage_close_their_calls_on_replay(
    pool: asyncpg.Pool, outage: Outage
) -> None:
    writer = outage.writer
    spooled = await writer.record(outage.call("CA-new"))
    assert spooled.ended_at is None
    await writer.progress("twilio", "CA-new", "in-progress")  # dropped, not raised
    assert await writer.end(_ending("CA-new")) is None
    # A previous run's spool: a call without a kind, then its ending.
    old = [_legacy(outage.call("CA-old")), encode_ending(_ending("CA-old", 7.0))]
    await outage.spool.append(old)

    outage.breaker.succeeded()
    assert await writer.replay() == 4
    rows = await pool.fetch(
        "SELECT provider_call_id, status, duration_s FROM calls ORDER BY provider_call_id"
    )
    assert [tuple(r) for r in rows] == [("CA-new", "completed", 42.0), ("CA-old", "completed", 7.0)]
    assert writer.spooled == 0


async def test_an_ending_replayed_twice_changes_nothing(pool: asyncpg.Pool, outage: Outage) -> None:
    writer = outage.writer
    await writer.record(outage.call("CA-twice"))
    assert await writer.end(_ending("CA-twice")) is None
    assert await writer.end(_ending("CA-twice", 99.0)) is None  # a provider's retry, later

    outage.breaker.succeeded()
    assert await writer.replay() == 3
    assert await pool.fetchval("SELECT duration_s FROM calls") == 42.0
    assert await pool.fetchval("SELECT count(*) FROM call_endings") == 0


async def test_a_replay_attempt_waits_for_postgres_and_never_raises(
    pool: asyncpg.Pool, outage: Outage
) -> None:
    writer = outage.writer
    await writer.record(outage.call("CA-wait"))

    await writer.try_replay()  # the breaker is open: nothing is tried
    assert writer.spooled == 1

    outage.breaker.succeeded()
    await writer.try_replay()
    assert writer.spooled == 0
    assert await pool.fetchval("SELECT count(*) FROM calls") == 1


# --- claims: a retry reaching another worker while the call is spooled ------------------------


@pytest.fixture
async def claims(settings: Settings) -> AsyncIterator[CallClaims]:
    """Claims under a prefix of the test's own, on a Redis that is up."""
    prefix = f"{settings.redis_prefix}claims-{secrets.token_hex(4)}:"
    client = aioredis.Redis.from_url(settings.redis_url)
    yield CallClaims(client, prefix, CircuitBreaker())
    await client.aclose()
    await delete_prefixed(settings.redis_url, prefix)


async def test_a_claim_is_taken_once_and_released(claims: CallClaims) -> None:
    first = spooled_record(_call("CA-claim"))
    assert await claims.claim([first]) == {}
    retry = first._replace(call_id="call_retry")
    assert await claims.claim([retry, spooled_record(_call("CA-other"))]) == {
        ("twilio", "CA-claim"): first
    }
    await claims.release([("twilio", "CA-claim")])
    assert await claims.claim([retry]) == {}


async def test_no_claim_is_tried_while_redis_is_down(settings: Settings) -> None:
    breaker = CircuitBreaker(failures_to_open=1)
    # Nothing listens on port 1: the first claim fails and opens the breaker.
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")
    claims = CallClaims(client, settings.redis_prefix, breaker)
    assert await claims.claim([spooled_record(_call("CA-down"))]) == {}
    assert not breaker.available
    await client.aclose()


async def test_a_retry_spooled_by_another_worker_gets_the_first_answer(
    pool: asyncpg.Pool, candidate: Candidate, claims: CallClaims, tmp_path: Path
) -> None:
    async with (
        _writer(pool, tmp_path / "a", candidate, claims) as first_worker,
        _writer(pool, tmp_path / "b", candidate, claims) as other_worker,
    ):
        answered = await first_worker.writer.record(first_worker.call("CA-retried"))
        retry = first_worker.call("CA-retried")._replace(call_id="call_of_the_retry")
        assert await other_worker.writer.record(retry) == answered
        assert other_worker.writer.spooled == 0 and other_worker.spool.pending_bytes() == 0

        first_worker.breaker.succeeded()
        other_worker.breaker.succeeded()
        assert await other_worker.writer.replay() == 0
        assert await first_worker.writer.replay() == 1
    rows = await pool.fetch("SELECT call_id FROM calls")
    assert [r["call_id"] for r in rows] == [answered.call_id]


async def test_a_committed_call_takes_no_claim(
    pool: asyncpg.Pool, candidate: Candidate, claims: CallClaims, tmp_path: Path
) -> None:
    async with _writer(pool, tmp_path, candidate, claims, down=False) as up:
        await up.writer.record(up.call("CA-committed"))
        assert await claims.claim([spooled_record(up.call("CA-committed"))]) == {}


async def test_a_call_that_cannot_be_spooled_withdraws_its_claim(
    pool: asyncpg.Pool, candidate: Candidate, claims: CallClaims, tmp_path: Path
) -> None:
    async with _writer(pool, tmp_path, candidate, claims, spool_bytes=0) as full:
        with pytest.raises(SpoolFull):
            await full.writer.record(full.call("CA-unspooled"))
    assert await claims.claim([spooled_record(full.call("CA-unspooled"))]) == {}

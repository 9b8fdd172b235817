"""Recording a batch of calls in one statement (store.calls.record_calls): the same outcome as
recording them one after another, one bad call never sinks the others, and the sticky rule
is the dry run's (tests/sticky_cases.py)."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta

import asyncpg
import pytest

from loadtests.record_cost import PLANS
from store.calls import (
    CALL_COLUMNS,
    RECORD_CALLS,
    CallEnd,
    CallNotRecorded,
    CallRecord,
    Candidate,
    EndedCall,
    _rounds,
    end_calls,
    new_call_id,
    record_calls,
    record_calls_on,
    settle_endings,
)
from store.channels import Variant
from store.db import create_pool
from store.draw import live_variants
from tests.call_rows import STARTED_AT, new_call
from tests.conftest import AgentFactory, Api, variant
from tests.router_fixtures import CALLER, CHANNEL, pin
from tests.sticky_cases import STICKY_CASES, StickyCase

OTHER_CALLER = "+12125550199"


def test_call_ids_sort_by_the_millisecond_they_were_minted() -> None:
    first = new_call_id()
    time.sleep(0.002)
    later = [new_call_id() for _ in range(1000)]

    assert re.fullmatch("call_[0-9a-f]{36}", first)
    assert int(first[5:17], 16) <= time.time_ns() // 1_000_000
    assert all(first < i for i in later)
    assert len(set(later)) == len(later)  # the same millisecond, told apart by chance


def test_call_columns_are_the_record_fields_in_order() -> None:
    """call_record reads a row by position."""
    columns = [c.strip() for c in CALL_COLUMNS.split(",")]
    assert [*columns, "analysis"] == list(CallRecord._fields)


@pytest.fixture
async def ab(api: Api, make_agent: AgentFactory) -> tuple[Candidate, Candidate]:
    """Channel CHANNEL split 50/50 between versions 1 (a) and 2 (b), sticky by caller."""
    agent = await make_agent(versions=2)
    candidates = []
    for label, version in (("a", 1), ("b", 2)):
        v = await api.ok("GET", f"/v1/agents/{agent['id']}/versions/{version}")
        candidates.append(Candidate(label, agent["id"], version, None, v["config_hash"]))
    variants = [variant(agent, "a", 1, 50), variant(agent, "b", 2, 50)]
    await pin(api, {"variants": variants, "sticky": "caller"})
    return candidates[0], candidates[1]


async def test_the_record_statement_is_planned_once_a_connection(
    database_url: str, ab: tuple[Candidate, Candidate]
) -> None:
    """Postgres plans a prepared statement's first five executions for their parameters, then
    keeps its generic plan while that is estimated no dearer: planning the record statement
    costs more than a batch of 15 calls (loadtests/README.md), so every later batch, of any
    size, must run the cached plan."""
    own = await create_pool(database_url, min_size=1, max_size=1)
    try:
        for n, size in enumerate([1, 15, 2, 100, 1, 15, 3, 1, 100, 1]):
            calls = [
                new_call(
                    f"CA{n}-{i}", "ab"[i % 2], ab, caller=f"+1212555{i:04d}", remember=i % 3 == 0
                )
                for i in range(size)
            ]
            assert all(isinstance(r, CallRecord) for r in await record_calls(own, calls))
        plans = await own.fetchrow(PLANS, RECORD_CALLS)
    finally:
        await own.close()

    assert tuple(plans) == (5, 5)


def _served(results: list[CallRecord | Exception]) -> list[tuple[str, str]]:
    return [(r.call_id, r.variant) if isinstance(r, CallRecord) else ("error", "") for r in results]


def test_a_call_waits_a_round_only_for_an_earlier_call_with_its_key() -> None:
    """Its provider call id, or its caller on its channel when both remember: a caller who is
    not remembered shares no row, and without any repeated key the batch is one statement."""
    ab = (Candidate("a", "agent_1", 1, None, "h"),)
    distinct = [new_call(f"CA{n}", "a", ab, caller=f"+1212555010{n}") for n in range(4)]
    assert _rounds(distinct) == [[0, 1, 2, 3]]
    unremembered = [new_call(f"CA{n}", "a", ab, remember=n == 0) for n in range(3)]
    assert _rounds(unremembered) == [[0, 1, 2]]
    remembered = [new_call(f"CA{n}", "a", ab) for n in range(3)]
    assert _rounds(remembered) == [[0], [1], [2]]
    retried = [*distinct[:2], distinct[0]._replace(call_id="call_retry"), distinct[2]]
    assert _rounds(retried) == [[0, 1, 3], [2]]


async def test_the_same_caller_twice_in_a_batch_keeps_the_first_draw(
    pool: asyncpg.Pool, ab: tuple[Candidate, Candidate]
) -> None:
    results = await record_calls(
        pool,
        [
            new_call("CA1", "b", ab),
            new_call("CA2", "a", ab, caller=OTHER_CALLER),
            new_call("CA3", "a", ab),  # the caller's remembered b is still live: b again
        ],
    )

    assert _served(results) == [("call_CA1", "b"), ("call_CA2", "a"), ("call_CA3", "b")]


async def test_a_remembered_variant_no_longer_live_gives_way_to_the_draw(
    pool: asyncpg.Pool, ab: tuple[Candidate, Candidate]
) -> None:
    a, _ = ab
    results = await record_calls(pool, [new_call("CA1", "b", ab), new_call("CA2", "a", (a,))])

    assert _served(results) == [("call_CA1", "b"), ("call_CA2", "a")]
    label = await pool.fetchval("SELECT label FROM caller_assignments WHERE caller = $1", CALLER)
    assert label == "a"


async def test_the_same_provider_call_id_twice_in_a_batch_records_it_once(
    pool: asyncpg.Pool, ab: tuple[Candidate, Candidate]
) -> None:
    first, retry = new_call("CA1", "a", ab), new_call("CA1", "b", ab)
    retry = retry._replace(call_id="call_retry")

    results = await record_calls(pool, [first, retry])

    assert _served(results) == [("call_CA1", "a"), ("call_CA1", "a")]
    assert await pool.fetchval("SELECT count(*) FROM calls") == 1


async def test_a_retry_of_a_call_recorded_earlier_gets_its_row(
    pool: asyncpg.Pool, ab: tuple[Candidate, Candidate]
) -> None:
    [earlier] = await record_calls(pool, [new_call("CA1", "a", ab)])
    retry = new_call("CA1", "a", ab)._replace(call_id="call_retry")

    [again] = await record_calls(pool, [retry])

    assert again == earlier


async def test_an_early_ending_is_applied_on_the_way_in(
    pool: asyncpg.Pool, ab: tuple[Candidate, Candidate]
) -> None:
    call = new_call("CA1", "a", ab)
    await pool.execute(
        "INSERT INTO call_endings (provider, provider_call_id, status, ended_at) "
        "VALUES ('twilio', 'CA1', 'completed', $1)",
        call.started_at,
    )

    [record] = await record_calls(pool, [call])

    assert isinstance(record, CallRecord)
    assert (record.status, record.ended_at, record.duration_s) == (
        "completed",
        call.started_at,
        0,
    )


async def test_endings_in_one_statement_close_open_calls_once_or_wait_for_their_calls(
    pool: asyncpg.Pool, ab: tuple[Candidate, Candidate]
) -> None:
    """END_CALLS as the router sends it, a batch at a time: an open call is closed by the first
    of its endings (a redelivery in the same batch finds it closed), an ending for a call not
    recorded yet is kept (the first one), and a closed call stays as it is."""
    a, _ = ab
    recorded = new_call("CA1", "a", ab)
    await record_calls(pool, [recorded])
    ended_at = recorded.started_at + timedelta(seconds=30)
    close = CallEnd("twilio", "CA1", "completed", ended_at, None)
    early = CallEnd("twilio", "CA2", "busy", ended_at, 0.0)
    again = CallEnd("twilio", "CA1", "failed", ended_at, 5.0)
    early_again = CallEnd("twilio", "CA2", "failed", ended_at, 1.0)

    results = await end_calls(pool, [close, early, again, early_again])

    assert results == [EndedCall(a.agent_id, a.version, 30.0), None, None, None]
    assert await end_calls(pool, [again]) == [None]
    kept = await pool.fetch("SELECT provider_call_id, status FROM call_endings")
    assert [tuple(r) for r in kept] == [("CA2", "busy")]
    row = await pool.fetchrow("SELECT status, duration_s FROM calls WHERE provider_call_id = 'CA1'")
    assert tuple(row) == ("completed", 30.0)


async def test_an_ending_kept_while_its_call_was_recorded_closes_the_call_at_the_upkeep(
    pool: asyncpg.Pool, ab: tuple[Candidate, Candidate]
) -> None:
    """The race of store/calls.py ENDINGS_AFTER, as it happens: the record statement runs, the
    ending arrives and is kept (the call's key is not committed yet), then the record commits,
    having read call_endings before the ending was there. The call is recorded open, the
    ending waits for nothing; the upkeep closes the call, and the rollups count it once."""
    call = new_call("CA1", "a", ab)
    ending = CallEnd("twilio", "CA1", "completed", call.started_at + timedelta(seconds=42), None)
    async with pool.acquire() as conn, conn.transaction():
        [recorded] = await record_calls_on(conn, [call])
        assert await end_calls(pool, [ending]) == [None]  # kept: no committed key yet
    assert isinstance(recorded, CallRecord) and recorded.ended_at is None
    assert await pool.fetchval("SELECT count(*) FROM call_endings") == 1

    settled = await settle_endings(pool)

    assert settled == (1, 1)
    row = await pool.fetchrow("SELECT status, duration_s FROM calls WHERE call_id = 'call_CA1'")
    assert tuple(row) == ("completed", 42.0)
    assert await pool.fetchval("SELECT count(*) FROM call_endings") == 0
    counted = await pool.fetchrow(
        "SELECT sum(calls), sum(completed), sum(duration_sum) FROM call_rollups_all"
    )
    assert tuple(counted) == (1, 1, 42)
    assert await settle_endings(pool) == (0, 0)


async def test_the_upkeep_forgets_spent_endings_and_keeps_waiting_ones(
    pool: asyncpg.Pool, ab: tuple[Candidate, Candidate]
) -> None:
    """An ending applied when its call was recorded goes, changing nothing; one whose call has
    not come stays; batches smaller than the endings spent take several rounds."""
    ended_at = STARTED_AT + timedelta(seconds=5)
    sids = [f"CA{n}" for n in range(5)]
    await end_calls(pool, [CallEnd("twilio", sid, "busy", ended_at, 0.0) for sid in sids])
    await record_calls(pool, [new_call(sid, "a", ab, remember=False) for sid in sids[:4]])
    before = [tuple(r) for r in await pool.fetch("SELECT * FROM calls ORDER BY call_id")]
    rollups = "SELECT sum(calls), sum(completed), sum(durations) FROM call_rollups_all"
    counted = tuple(await pool.fetchrow(rollups))

    assert await settle_endings(pool, batch=3) == (4, 0)

    assert [tuple(r) for r in await pool.fetch("SELECT * FROM calls ORDER BY call_id")] == before
    assert tuple(await pool.fetchrow(rollups)) == counted
    waiting = await pool.fetch("SELECT provider_call_id FROM call_endings")
    assert [r[0] for r in waiting] == ["CA4"]


async def test_an_ending_postgres_refuses_does_not_sink_its_batch(
    pool: asyncpg.Pool, ab: tuple[Candidate, Candidate]
) -> None:
    await record_calls(
        pool, [new_call("CA1", "a", ab), new_call("CA3", "a", ab, caller=OTHER_CALLER)]
    )
    ended_at = STARTED_AT + timedelta(seconds=10)
    hostile = CallEnd("twilio", "CA2\x00", "completed", ended_at, None)  # text cannot hold NUL
    endings = [CallEnd("twilio", sid, "completed", ended_at, None) for sid in ("CA1", "CA3")]

    first, refused, last = await end_calls(pool, [endings[0], hostile, endings[1]])

    assert isinstance(first, EndedCall) and isinstance(last, EndedCall)
    assert isinstance(refused, asyncpg.DataError)
    assert await pool.fetchval("SELECT count(*) FROM calls WHERE ended_at IS NULL") == 0
    assert await pool.fetchval("SELECT count(*) FROM call_endings") == 0


async def test_one_bad_call_does_not_sink_the_batch(
    pool: asyncpg.Pool, ab: tuple[Candidate, Candidate]
) -> None:
    a, b = ab
    unknown_blob = Candidate("a", a.agent_id, a.version, None, "0" * 64)
    results = await record_calls(
        pool,
        [
            new_call("CA1", "a", ab),
            new_call("CA2", "c", ab, caller=OTHER_CALLER),  # drawn a variant it was not offered
            new_call("CA3", "a", (unknown_blob,), caller="+12125550111"),  # no such config blob
            new_call("CA4", "b", (b,), caller="+12125550112"),
        ],
    )

    assert _served(results)[0] == ("call_CA1", "a")
    assert isinstance(results[1], CallNotRecorded)
    assert isinstance(results[2], asyncpg.ForeignKeyViolationError)
    assert _served(results)[3] == ("call_CA4", "b")
    recorded = await pool.fetch("SELECT provider_call_id FROM calls ORDER BY 1")
    assert [r["provider_call_id"] for r in recorded] == ["CA1", "CA4"]
    # The bad calls' caller assignments were rolled back with them.
    callers = await pool.fetch("SELECT caller FROM caller_assignments ORDER BY 1")
    assert [r["caller"] for r in callers] == sorted([CALLER, "+12125550112"])


ASSIGNMENTS = "SELECT number, caller, label FROM caller_assignments ORDER BY 1, 2"


async def test_a_channel_keeps_its_callers_while_it_lives_and_takes_them_when_deleted(
    pool: asyncpg.Pool, api: Api, ab: tuple[Candidate, Candidate]
) -> None:
    """Migration 0014: triggers on channels, in place of a foreign key, drop a channel's
    caller assignments with it; an update of the channel (new weights) keeps them."""
    agent = {"id": ab[0].agent_id}
    await record_calls(
        pool, [new_call("CA1", "a", ab), new_call("CA2", "b", ab, caller=OTHER_CALLER)]
    )
    other = "+14155550101"
    await pin(api, {"agent_id": agent["id"], "version": 1}, other)
    await pool.execute(
        "INSERT INTO caller_assignments (number, caller, label) VALUES ($1, $2, 'default')",
        other,
        CALLER,
    )
    kept = [(CHANNEL, OTHER_CALLER, "b"), (CHANNEL, CALLER, "a"), (other, CALLER, "default")]

    await pin(
        api,
        {"variants": [variant(agent, "a", 1, 10), variant(agent, "b", 2, 90)], "sticky": "caller"},
    )
    assert [tuple(r) for r in await pool.fetch(ASSIGNMENTS)] == sorted(kept)

    await api.ok("DELETE", f"/v1/channels/{CHANNEL}", 204)
    assert [tuple(r) for r in await pool.fetch(ASSIGNMENTS)] == [(other, CALLER, "default")]


async def test_a_call_to_a_channel_deleted_meanwhile_is_recorded_and_forgotten_by_a_new_channel(
    pool: asyncpg.Pool, api: Api, ab: tuple[Candidate, Candidate]
) -> None:
    """A call routed before its channel was deleted and recorded after (in flight, or replayed
    from the spool) is recorded, where the foreign key refused it; its caller's assignment,
    left without a channel, is cleared when a channel is created on the number, so that the
    new channel's callers draw afresh."""
    agent = {"id": ab[0].agent_id}
    await api.ok("DELETE", f"/v1/channels/{CHANNEL}", 204)

    (late,) = await record_calls(pool, [new_call("CA1", "b", ab)])

    assert isinstance(late, CallRecord) and late.variant == "b"
    assert [tuple(r) for r in await pool.fetch(ASSIGNMENTS)] == [(CHANNEL, CALLER, "b")]
    await pin(
        api,
        {"variants": [variant(agent, "a", 1, 50), variant(agent, "b", 2, 50)], "sticky": "caller"},
    )
    assert await pool.fetch(ASSIGNMENTS) == []


@pytest.mark.parametrize("case", STICKY_CASES)
async def test_record_call_keeps_or_redraws_as_the_dry_run_does(
    pool: asyncpg.Pool, ab: tuple[Candidate, Candidate], case: StickyCase
) -> None:
    by_label = {c.label: c for c in ab}
    variants = [Variant(label, "", None, w) for label, w in case.weights.items()]
    # What the router offers when it remembers: every live variant (router/resolver.py).
    offered = tuple(by_label[v.label] for v in live_variants(variants))
    if case.remembered is not None:
        await pool.execute(
            "INSERT INTO caller_assignments (number, caller, label) VALUES ($1, $2, $3)",
            CHANNEL,
            CALLER,
            case.remembered,
        )

    [record] = await record_calls(pool, [new_call("CA1", case.drawn, offered)])

    assert _served([record]) == [("call_CA1", case.expected)]
    label = await pool.fetchval("SELECT label FROM caller_assignments WHERE caller = $1", CALLER)
    assert label == case.expected


async def test_one_caller_in_two_batches_at_once_hears_one_variant(
    pool: asyncpg.Pool, ab: tuple[Candidate, Candidate]
) -> None:
    """Two workers' batches commit side by side, each drawing the caller differently: the
    assignment is settled once, and both calls are served what it says."""
    first, second = await asyncio.gather(
        record_calls(pool, [new_call("CA1", "a", ab)]),
        record_calls(pool, [new_call("CA2", "b", ab)]),
    )

    served = {r.variant for r in first + second if isinstance(r, CallRecord)}
    label = await pool.fetchval("SELECT label FROM caller_assignments WHERE caller = $1", CALLER)
    assert served == {label}


async def test_one_provider_call_in_two_batches_at_once_is_recorded_once(
    pool: asyncpg.Pool, ab: tuple[Candidate, Candidate]
) -> None:
    """A provider retry reaching another worker while the first is committing: both answers
    name the one row."""
    retry = new_call("CA1", "a", ab)._replace(call_id="call_retry")
    first, second = await asyncio.gather(
        record_calls(pool, [new_call("CA1", "a", ab)]), record_calls(pool, [retry])
    )

    assert first == second
    assert await pool.fetchval("SELECT count(*) FROM calls") == 1

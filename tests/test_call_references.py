"""A call always names an agent and a config blob that exist (migration 0012): the record
statement checks both, as the foreign keys it replaced did, and neither can go away after, so
a pair a call was recorded with is not looked up again (`Known`) until its holder may be
talking to another database (the router's side: test_router_cache.py)."""

from __future__ import annotations

import asyncpg
import pytest

from store.calls import Candidate, Known, record_calls, record_calls_on
from tests.call_rows import DELETE_AGENT, lose_agent, new_call
from tests.conftest import AgentFactory, Api


async def _version_1(api: Api, make_agent: AgentFactory) -> Candidate:
    """Version 1 of a new agent, as the router would offer it."""
    agent = await make_agent(versions=1)
    v = await api.ok("GET", f"/v1/agents/{agent['id']}/versions/1")
    return Candidate("a", agent["id"], 1, None, v["config_hash"])


@pytest.fixture
async def served(api: Api, make_agent: AgentFactory) -> Candidate:
    return await _version_1(api, make_agent)


async def test_a_call_naming_no_agent_is_refused_and_the_batch_goes_on(
    pool: asyncpg.Pool, served: Candidate
) -> None:
    nobody = Candidate("a", "agt_nobody", 1, None, served.config_hash)
    results = await record_calls(
        pool,
        [
            new_call("CA1", "a", (served,), remember=False),
            new_call("CA2", "a", (nobody,), remember=False),
        ],
    )

    assert not isinstance(results[0], Exception)
    assert isinstance(results[1], asyncpg.ForeignKeyViolationError)
    assert "agt_nobody" in str(results[1])
    recorded = await pool.fetch("SELECT provider_call_id FROM calls")
    assert [r["provider_call_id"] for r in recorded] == ["CA1"]
    keys = await pool.fetch("SELECT provider_call_id FROM call_keys")
    assert [r["provider_call_id"] for r in keys] == ["CA1"]


async def test_an_agent_with_calls_cannot_be_deleted(
    pool: asyncpg.Pool, make_agent: AgentFactory, served: Candidate
) -> None:
    [record] = await record_calls(pool, [new_call("CA1", "a", (served,), remember=False)])
    assert not isinstance(record, Exception)
    # A draft-only agent has no versions to hold it either.
    draft_only = await make_agent()

    for agent_id in (served.agent_id, draft_only["id"]):
        with pytest.raises(asyncpg.RestrictViolationError, match="archived, never deleted"):
            await pool.execute(DELETE_AGENT, agent_id)
    assert await pool.fetchval("SELECT count(*) FROM agents") == 2


async def test_a_known_pair_is_not_looked_up_again_and_vouches_for_nothing_else(
    pool: asyncpg.Pool, served: Candidate
) -> None:
    known = Known()
    other_blob = served._replace(config_hash="0" * 64)
    async with pool.acquire() as conn:
        [first] = await record_calls_on(conn, [new_call("CA1", "a", (served,))], known)
        assert not isinstance(first, Exception)
        await lose_agent(pool, served.agent_id)

        mixed = await record_calls_on(
            conn,
            [
                new_call("CA2", "a", (served,)),
                new_call("CA3", "a", (other_blob,), caller="+12125550199"),
            ],
            known,
        )
        [unknown] = await record_calls_on(conn, [new_call("CA4", "a", (served,))])

    assert not isinstance(mixed[0], Exception)  # known: recorded, not looked up
    assert isinstance(mixed[1], asyncpg.ForeignKeyViolationError)
    assert isinstance(unknown, asyncpg.ForeignKeyViolationError)  # no Known: looked up
    recorded = await pool.fetch("SELECT provider_call_id FROM calls ORDER BY provider_call_id")
    assert [r["provider_call_id"] for r in recorded] == ["CA1", "CA2"]


async def test_known_forgets_every_pair_past_its_limit(
    pool: asyncpg.Pool, api: Api, make_agent: AgentFactory, served: Candidate
) -> None:
    known = Known(limit=1)
    other = await _version_1(api, make_agent)
    async with pool.acquire() as conn:
        await record_calls_on(conn, [new_call("CA1", "a", (served,))], known)
        assert served in known
        await record_calls_on(conn, [new_call("CA2", "a", (other,), caller="+12125550199")], known)
        assert served not in known
        assert other not in known

"""A call always names an agent and a config blob that exist (migration 0012): the record
statement checks both, as the foreign keys it replaced did, and neither can go away after."""

from __future__ import annotations

import asyncpg
import pytest

from store.calls import Candidate, record_calls
from tests.call_rows import new_call
from tests.conftest import AgentFactory, Api

DELETE_AGENT = "DELETE FROM agents WHERE id = $1"


@pytest.fixture
async def served(api: Api, make_agent: AgentFactory) -> Candidate:
    """Version 1 of a new agent, as the router would offer it."""
    agent = await make_agent(versions=1)
    v = await api.ok("GET", f"/v1/agents/{agent['id']}/versions/1")
    return Candidate("a", agent["id"], 1, None, v["config_hash"])


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

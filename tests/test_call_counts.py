"""GET /v1/calls?count=true: the total of calls matching the filters, across pages, counted
only when asked and never past a cap."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from store import calls
from tests.call_rows import Outcome, insert_calls
from tests.conftest import AgentFactory, Api

OTHER_CHANNEL = "+14155550111"


async def _seed(pool: asyncpg.Pool, agent_id: str) -> None:
    await insert_calls(pool, agent_id, 1, [Outcome(automated=True)] * 3 + [Outcome()] * 4)
    await insert_calls(pool, agent_id, 2, [Outcome(automated=False)] * 5, channel=OTHER_CHANNEL)


async def test_total_counts_every_page_of_the_filtered_calls(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent = await make_agent(versions=2)
    await _seed(pool, agent["id"])
    first = await api.ok("GET", "/v1/calls", params={"limit": "2", "count": "true"})
    assert (len(first["items"]), first["total"], first["total_exact"]) == (2, 12, True)

    cases = [
        ({"version": "1"}, 7),
        ({"version": "2", "channel": OTHER_CHANNEL}, 5),
        ({"automated": "true"}, 3),
        ({"agent_id": agent["id"], "version": "draft"}, 0),
        ({"since": "2999-01-01T00:00:00Z"}, 0),
    ]
    for filters, total in cases:
        body = await api.ok("GET", "/v1/calls", params={**filters, "count": "1"})
        assert (body["total"], body["total_exact"], len(body["items"])) == (total, True, total)

    # Not asked, not counted: the list is the documented list, nothing more.
    plain = await api.ok("GET", "/v1/calls", params={"count": "false"})
    assert set(plain) == {"items", "next_cursor"}


async def test_total_stops_at_the_cap(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = await make_agent(versions=2)
    await _seed(pool, agent["id"])
    monkeypatch.setattr(calls, "MAX_CALL_COUNT", 6)
    capped = await api.ok("GET", "/v1/calls", params={"count": "true"})
    assert (capped["total"], capped["total_exact"]) == (6, False)
    at_cap = await api.ok("GET", "/v1/calls", params={"count": "true", "version": "2"})
    assert (at_cap["total"], at_cap["total_exact"]) == (5, True)


async def test_total_while_calls_arrive(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    """Totals read while calls are inserted see a whole batch or none of it."""
    agent = await make_agent(versions=1)
    batch = [Outcome()] * 50
    writes = [insert_calls(pool, agent["id"], 1, batch) for _ in range(4)]
    reads = [api.ok("GET", "/v1/calls", params={"count": "true"}) for _ in range(6)]
    results = await asyncio.gather(*writes, *reads)
    totals = [r["total"] for r in results[4:]]
    assert all(isinstance(t, int) and t % 50 == 0 for t in totals), totals
    final = await api.ok("GET", "/v1/calls", params={"count": "true"})
    assert final["total"] == 200


@pytest.mark.parametrize("value", ["maybe", "", "2", "TRUE!", "yes please"])
async def test_count_must_be_a_boolean(api: Api, value: str) -> None:
    error = await api.ok("GET", "/v1/calls", 400, params={"count": value})
    assert error["error"]["details"][0]["path"] == "count"

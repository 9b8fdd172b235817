"""GET /v1/calls/export: every call the list's filters select, oldest first, streamed as CSV or
NDJSON without holding them all in memory; bad parameters are 400s naming them; a failure
mid-stream breaks the answer rather than ending it as if complete."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import tracemalloc
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest

from admin.calls import EXPORT_COLUMNS
from tests.call_rows import Outcome, insert_calls
from tests.conftest import AgentFactory, Api

EXPORT = "/v1/calls/export"
T0 = datetime(2026, 3, 4, 5, 0, tzinfo=UTC)


@pytest.fixture
async def agent_id(make_agent: AgentFactory, pool: asyncpg.Pool) -> str:
    """An agent with calls of every kind: two versions and the draft, hours apart, analysed or
    not, with and without durations."""
    agent = await make_agent(versions=2)
    outcomes = [
        Outcome(automated=True, sentiment="positive", duration_s=61.5),
        Outcome(automated=False, sentiment="negative", duration_s=0.0),
        Outcome(),
        Outcome(status="failed"),
    ]
    for hour, version in enumerate((1, 2, None, 1)):
        await insert_calls(
            pool, agent["id"], version, outcomes, started_at=T0 + timedelta(hours=hour)
        )
    return str(agent["id"])


def _csv_field(value: Any) -> str:
    """A JSON value of the call resource as the CSV writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def _listed(api: Api, query: str) -> list[dict[str, Any]]:
    """The call list's items for `query`, oldest first."""
    body = await api.ok("GET", f"/v1/calls?limit=1000&{query}")
    assert body["next_cursor"] is None
    return list(reversed(body["items"]))


async def _ndjson(api: Api, query: str) -> list[dict[str, Any]]:
    resp = await api.call("GET", f"{EXPORT}?format=ndjson&{query}")
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/x-ndjson"
    return [json.loads(line) for line in (await resp.text()).splitlines()]


async def test_csv_holds_the_listed_calls_oldest_first(api: Api, agent_id: str) -> None:
    resp = await api.call("GET", f"{EXPORT}?agent_id={agent_id}", role="viewer")

    assert resp.status == 200
    assert resp.content_type == "text/csv"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="calls.csv"'
    assert resp.headers["Transfer-Encoding"] == "chunked"
    rows = list(csv.reader(io.StringIO(await resp.text())))
    listed = await _listed(api, f"agent_id={agent_id}")
    assert rows[0] == EXPORT_COLUMNS == [k for k in listed[0] if k != "analysis"]
    assert rows[1:] == [[_csv_field(call[k]) for k in EXPORT_COLUMNS] for call in listed]
    assert len(rows) == 17


async def test_ndjson_by_format_or_by_accept(api: Api, agent_id: str) -> None:
    listed = [
        {k: v for k, v in c.items() if k != "analysis"}
        for c in await _listed(api, f"agent_id={agent_id}")
    ]
    assert await _ndjson(api, f"agent_id={agent_id}") == listed

    accepted = await api.call(
        "GET", f"{EXPORT}?agent_id={agent_id}", headers={"Accept": "application/x-ndjson"}
    )
    assert accepted.content_type == "application/x-ndjson"
    assert [json.loads(line) for line in (await accepted.text()).splitlines()] == listed
    # format wins over Accept
    asked = await api.call(
        "GET", f"{EXPORT}?format=csv", headers={"Accept": "application/x-ndjson"}
    )
    assert asked.content_type == "text/csv"


@pytest.mark.parametrize(
    "query",
    [
        "version=draft",
        "version=1",
        "variant=default&status=failed",
        "since=2026-03-04T06:00:00Z&until=2026-03-04T08:00:00Z",
        "sentiment=negative",
        "automated=true",
        "channel=%2B14155550100&automated=false",
    ],
)
async def test_the_filters_are_the_lists(api: Api, agent_id: str, query: str) -> None:
    listed = await _listed(api, f"agent_id={agent_id}&{query}")
    exported = await _ndjson(api, f"agent_id={agent_id}&{query}")
    assert [c["call_id"] for c in exported] == [c["call_id"] for c in listed]
    assert listed  # every case selects something


async def test_nothing_selected_is_a_header_or_nothing(api: Api, agent_id: str) -> None:
    resp = await api.call("GET", f"{EXPORT}?agent_id=agt_none")
    assert await resp.text() == ",".join(EXPORT_COLUMNS) + "\r\n"
    assert await _ndjson(api, "agent_id=agt_none") == []


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("format=xml", "format"),
        ("format=", "format"),
        ("version=v1", "version"),
        ("version=%C2%B2", "version"),
        ("since=yesterday", "since"),
        ("until=2026-13-01", "until"),
        ("automated=maybe", "automated"),
    ],
)
async def test_bad_parameters_are_400s_naming_them(api: Api, query: str, path: str) -> None:
    resp = await api.call("GET", f"{EXPORT}?{query}")
    body = await resp.json()
    assert resp.status == 400, body
    assert resp.content_type == "application/json"
    assert [d["path"] for d in body["error"]["details"]] == [path]


async def test_two_exports_at_once_give_the_same_calls(api: Api, agent_id: str) -> None:
    first, second = await asyncio.gather(*(_ndjson(api, f"agent_id={agent_id}") for _ in range(2)))
    assert first == second and len(first) == 16


async def test_memory_stays_flat_whatever_the_number_of_calls(
    api: Api, make_agent: AgentFactory, pool: asyncpg.Pool
) -> None:
    agent = await _many_calls(make_agent, pool, hours=10)
    first_hour = f"since={T0.isoformat()}&until={(T0 + timedelta(hours=1)).isoformat()}"
    some = await _peak_memory(api, f"agent_id={agent['id']}&{first_hour}".replace("+", "%2B"))
    every = await _peak_memory(api, f"agent_id={agent['id']}")

    assert (some[1], every[1]) == (2_001, 20_001)  # the header and the calls
    # Ten times the calls through the same memory: a prefetch of rows and a chunk at a time.
    assert every[0] < 1.5 * some[0], (some, every)


async def _many_calls(make_agent: AgentFactory, pool: asyncpg.Pool, hours: int) -> dict[str, Any]:
    """An agent with 2,000 analysed calls an hour for `hours` hours from T0."""
    agent = await make_agent(versions=1)
    outcomes = [Outcome(automated=True, sentiment="neutral", duration_s=12.5)] * 2000
    for hour in range(hours):
        await insert_calls(pool, agent["id"], 1, outcomes, started_at=T0 + timedelta(hours=hour))
    return agent


async def _peak_memory(api: Api, query: str) -> tuple[int, int]:
    """The most memory allocated at once while the export of `query` streams through this
    process (server and client), and the lines it holds."""
    lines = 0
    tracemalloc.start()
    try:
        resp = await api.call("GET", f"{EXPORT}?{query}")
        async for chunk in resp.content.iter_any():
            lines += chunk.count(b"\n")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, lines


async def test_a_failure_mid_stream_breaks_the_answer(
    api: Api, make_agent: AgentFactory, pool: asyncpg.Pool
) -> None:
    agent = await _many_calls(make_agent, pool, hours=5)
    resp = await api.call("GET", f"{EXPORT}?agent_id={agent['id']}&format=ndjson")
    assert resp.status == 200
    await resp.content.readany()  # the export has begun
    # Its Postgres connection is cut (a failover, an administrator) while it streams.
    killed = await pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE query LIKE '%ORDER BY started_at, call_id%' AND pid <> pg_backend_pid()"
    )
    assert killed == 1
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()

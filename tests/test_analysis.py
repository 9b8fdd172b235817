"""POST /v1/calls/{id}/analysis and GET /v1/calls/{id}: results checked against the fields of
the exact config each call was served, replaced on re-post, audited and counted."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from httpkit.keys import FORGET_IDLE_SERIES
from tests.call_rows import Outcome, insert_calls
from tests.conftest import AgentFactory, Api

V1_FIELDS = [
    {"name": "order_id", "type": "integer", "description": "the order discussed"},
    {"name": "resolved", "type": "boolean", "description": ""},
    {"name": "score", "type": "number", "description": ""},
    {"name": "summary", "type": "string", "description": ""},
]
DRAFT_FIELDS = [{"name": "order_id", "type": "string", "description": "order reference"}]


@pytest.fixture
async def calls(api: Api, pool: asyncpg.Pool, make_agent: AgentFactory) -> dict[str, Any]:
    """A call served version 1 and one served the draft, whose analysis fields differ."""
    agent = await make_agent(versions=1, call_analysis={"fields": V1_FIELDS})
    await api.ok(
        "PATCH",
        f"/v1/agents/{agent['id']}/draft",
        json={"config": {"call_analysis": {"fields": DRAFT_FIELDS}}},
    )
    [v1_call] = await insert_calls(pool, agent["id"], 1, [Outcome()])
    [draft_call] = await insert_calls(pool, agent["id"], None, [Outcome()])
    return {"agent": agent, "v1": v1_call, "draft": draft_call}


def sample(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    """A sample's name and labels, as `samples` keys them."""
    return name, frozenset(labels.items())


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, as a scrape parses it."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def _analysis(**fields: Any) -> dict[str, Any]:
    return {"sentiment": "positive", "automated": True, "fields": fields}


async def test_fields_are_checked_against_the_config_the_call_was_served(
    api: Api, calls: dict[str, Any]
) -> None:
    v1, draft = f"/v1/calls/{calls['v1']}/analysis", f"/v1/calls/{calls['draft']}/analysis"

    body = await api.ok("POST", v1, 422, role="runtime", json=_analysis(order_id="A-12"))
    assert body["error"]["code"] == "invalid_analysis"
    assert body["error"]["details"] == [
        {"path": "fields.order_id", "message": "must be of type integer"}
    ]
    # The draft declares order_id as a string: the same value is right for its call...
    await api.ok("POST", draft, role="runtime", json=_analysis(order_id="A-12"))
    # ...and an integer is wrong there, although version 1 would take it.
    body = await api.ok("POST", draft, 422, role="runtime", json=_analysis(order_id=12))
    assert body["error"]["details"][0]["path"] == "fields.order_id"

    ok = _analysis(order_id=12, resolved=False, score=3, summary="refund", unused=None)
    body = await api.ok("POST", v1, 422, role="runtime", json=ok)
    assert body["error"]["details"] == [
        {"path": "fields.unused", "message": "not a call_analysis field of this config"}
    ]
    del ok["fields"]["unused"]
    await api.ok("POST", v1, role="runtime", json=ok)


async def test_type_errors_name_every_field(api: Api, calls: dict[str, Any]) -> None:
    # bool is no number here, 1.5 no integer, and a number no string or boolean.
    bad = _analysis(order_id=1.5, resolved=1, score=True, summary=7)
    body = await api.ok("POST", f"/v1/calls/{calls['v1']}/analysis", 422, role="editor", json=bad)
    assert [d["path"] for d in body["error"]["details"]] == [
        "fields.order_id",
        "fields.resolved",
        "fields.score",
        "fields.summary",
    ]


async def test_sentiment_and_automated_are_required(api: Api, calls: dict[str, Any]) -> None:
    path = f"/v1/calls/{calls['v1']}/analysis"
    cases = [
        ({"automated": True}, "sentiment"),
        ({"sentiment": "angry", "automated": True}, "sentiment"),
        ({"sentiment": "neutral", "automated": "yes"}, "automated"),
        ({"sentiment": "neutral", "automated": True, "fields": []}, "fields"),
        ({"sentiment": "neutral", "automated": True, "extra": 1}, "extra"),
    ]
    for body, path_named in cases:
        error = await api.ok("POST", path, 422, role="runtime", json=body)
        assert error["error"]["details"][0]["path"] == path_named, body


async def test_repost_replaces_and_is_audited(api: Api, calls: dict[str, Any]) -> None:
    call_id, agent_id = calls["v1"], calls["agent"]["id"]
    path = f"/v1/calls/{call_id}/analysis"
    await api.ok("POST", path, role="runtime", json=_analysis(order_id=1))
    second = {"sentiment": "negative", "automated": False, "fields": {"resolved": False}}
    body = await api.ok("POST", path, role="editor", json=second)
    assert body["sentiment"] == "negative" and body["automated"] is False
    assert body["analysis"]["fields"] == {"resolved": False}
    assert body["analysis"]["posted_by"] == "editor-user"

    audit = await api.ok("GET", "/v1/audit?action=call.analysis", role="viewer")
    newest, oldest = audit["items"]
    assert oldest["before"] == {"call_id": call_id, "analysis": None}
    assert oldest["after"]["analysis"]["fields"] == {"order_id": 1}
    assert newest["before"]["analysis"] == oldest["after"]["analysis"]
    assert newest["after"]["analysis"] == body["analysis"]
    assert (newest["actor"], newest["agent_id"], newest["channel"]) == (
        "editor-user",
        agent_id,
        "+14155550100",
    )


async def test_get_call_returns_the_call_with_its_analysis(
    api: Api, pool: asyncpg.Pool, calls: dict[str, Any]
) -> None:
    call_id, agent = calls["v1"], calls["agent"]
    before = await api.ok("GET", f"/v1/calls/{call_id}", role="viewer")
    config_hash = await pool.fetchval("SELECT config_hash FROM calls WHERE call_id = $1", call_id)
    assert before == {
        "call_id": call_id,
        "provider": "test",
        "provider_call_id": call_id,
        "channel": "+14155550100",
        "from": "+14155550000",
        "agent_id": agent["id"],
        "version": 1,
        "draft_revision": None,
        "config_hash": config_hash,
        "variant": "default",
        "status": "completed",
        "started_at": before["started_at"],
        "ended_at": None,
        "duration_s": None,
        "sentiment": None,
        "automated": None,
        "analysis": None,
    }
    posted = await api.ok(
        "POST", f"/v1/calls/{call_id}/analysis", role="runtime", json=_analysis(score=0.5)
    )
    after = await api.ok("GET", f"/v1/calls/{call_id}", role="runtime")
    assert after == posted
    assert after["analysis"] == {
        "sentiment": "positive",
        "automated": True,
        "fields": {"score": 0.5},
        "posted_at": after["analysis"]["posted_at"],
        "posted_by": "runtime-user",
    }


async def test_roles_and_unknown_calls(api: Api, calls: dict[str, Any]) -> None:
    path = f"/v1/calls/{calls['v1']}/analysis"
    await api.ok("POST", path, 403, role="viewer", json=_analysis())
    await api.ok("POST", path, 401, role=None, json=_analysis())
    body = await api.ok("POST", "/v1/calls/nope/analysis", 404, role="runtime", json=_analysis())
    assert body["error"]["code"] == "call_not_found"
    await api.ok("GET", "/v1/calls/nope", 404, role="viewer")


async def test_metrics_count_analyses_by_agent_and_version(api: Api, calls: dict[str, Any]) -> None:
    agent_id = calls["agent"]["id"]
    await api.ok("POST", f"/v1/calls/{calls['v1']}/analysis", role="runtime", json=_analysis())
    draft = {"sentiment": "negative", "automated": False}
    await api.ok("POST", f"/v1/calls/{calls['draft']}/analysis", role="runtime", json=draft)
    resp = await api.call("GET", "/metrics", role=None)
    scraped = samples(await resp.text())
    assert resp.status == 200
    for counted in (
        sample("agentver_call_analyses_total", agent_id=agent_id, version="1"),
        sample("agentver_calls_automated_total", agent_id=agent_id, version="1"),
        sample(
            "agentver_call_sentiment_total", agent_id=agent_id, sentiment="positive", version="1"
        ),
        sample("agentver_call_analyses_total", agent_id=agent_id, version="draft"),
        sample(
            "agentver_call_sentiment_total",
            agent_id=agent_id,
            sentiment="negative",
            version="draft",
        ),
    ):
        assert scraped[counted] == 1
    assert (
        sample("agentver_calls_automated_total", agent_id=agent_id, version="draft") not in scraped
    )
    # Versions no longer analysed: their series go at the second sweep after their last count.
    for _ in range(2):
        api.client.app[FORGET_IDLE_SERIES]()
    assert agent_id not in await (await api.call("GET", "/metrics", role=None)).text()


async def test_a_nul_in_a_field_is_422_naming_it(api: Api, calls: dict[str, Any]) -> None:
    # Postgres jsonb cannot hold NUL: refused like every other stored text.
    path = f"/v1/calls/{calls['v1']}/analysis"
    body = await api.ok("POST", path, 422, role="runtime", json=_analysis(summary="a\x00b"))
    assert body["error"]["details"] == [
        {"path": "fields.summary", "message": "control characters are not allowed"}
    ]

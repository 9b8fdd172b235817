"""Archived agents: unlisted by default, refused as a channel's target, never archived while a
channel routes to them; unarchived at will; their versions and calls stay."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from tests.call_rows import Outcome, insert_calls
from tests.conftest import AgentFactory, Api, variant

NUMBER = "+14155550123"
OTHER = "+14155550124"


def _agent(agent: dict[str, Any]) -> str:
    return f"/v1/agents/{agent['id']}"


async def _listed(api: Api, archived: str | None = None) -> list[str]:
    query = "" if archived is None else f"&archived={archived}"
    page = await api.ok("GET", f"/v1/agents?limit=1000{query}", role="viewer")
    return [a["id"] for a in page["items"]]


async def test_an_archived_agent_is_unlisted_and_keeps_its_history(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    kept, archived = await make_agent(), await make_agent(versions=2)
    await insert_calls(pool, archived["id"], 1, [Outcome()])

    body = await api.ok("POST", _agent(archived) + "/archive", role="publisher")
    assert body["archived_at"] is not None and body["id"] == archived["id"]
    assert await _listed(api) == [kept["id"]]
    assert await _listed(api, "false") == [kept["id"]]
    assert await _listed(api, "true") == [archived["id"]]
    assert await _listed(api, "all") == [archived["id"], kept["id"]]

    # Still readable by id, with its versions and calls.
    assert (await api.ok("GET", _agent(archived)))["archived_at"] == body["archived_at"]
    assert len((await api.ok("GET", _agent(archived) + "/versions"))["items"]) == 2
    calls = await api.ok("GET", f"/v1/calls?agent_id={archived['id']}")
    assert len(calls["items"]) == 1

    # Archiving again changes nothing; unarchiving lists it again.
    again = await api.ok("POST", _agent(archived) + "/archive", role="publisher")
    assert again["archived_at"] == body["archived_at"]
    live = await api.ok("POST", _agent(archived) + "/unarchive", role="publisher")
    assert live["archived_at"] is None
    assert await _listed(api) == [archived["id"], kept["id"]]
    assert (await api.ok("POST", _agent(archived) + "/unarchive"))["archived_at"] is None

    entries = (await api.ok("GET", f"/v1/audit?agent_id={archived['id']}"))["items"]
    actions = [e["action"] for e in entries]
    assert actions[:2] == ["agent.unarchive", "agent.archive"]  # once each
    assert entries[1]["actor"] == "publisher-user"


async def test_an_archived_agent_cannot_be_routed_to(api: Api, make_agent: AgentFactory) -> None:
    live, archived = await make_agent(versions=1), await make_agent(versions=1)
    await api.ok("POST", _agent(archived) + "/archive")

    for body, path in [
        ({"agent_id": archived["id"], "version": 1}, "variants[0].agent_id"),
        ({"agent_id": archived["id"], "version": None}, "variants[0].agent_id"),
        (
            {"variants": [variant(live, "a", 1, 1), variant(archived, "b", 1, 1)]},
            "variants[1].agent_id",
        ),
    ]:
        error = (await api.ok("PUT", f"/v1/channels/{NUMBER}", 422, json=body))["error"]
        assert error["code"] == "invalid_routing"
        assert error["details"][0]["path"] == path
        assert "archived" in error["details"][0]["message"]
    await api.ok("GET", f"/v1/channels/{NUMBER}", 404)

    await api.ok("POST", _agent(archived) + "/unarchive")
    await api.ok("PUT", f"/v1/channels/{NUMBER}", json={"agent_id": archived["id"], "version": 1})


async def test_archiving_an_agent_channels_route_to_is_409_naming_them(
    api: Api, make_agent: AgentFactory
) -> None:
    agent, other = await make_agent(versions=1), await make_agent(versions=1)
    await api.ok("PUT", f"/v1/channels/{OTHER}", json={"agent_id": agent["id"], "version": 1})
    variants = [variant(other, "a", 1, 1), variant(agent, "b", None, 0)]
    await api.ok("PUT", f"/v1/channels/{NUMBER}", json={"variants": variants})

    error = (await api.ok("POST", _agent(agent) + "/archive", 409))["error"]
    assert error["code"] == "agent_in_use"
    assert error["details"] == {"channels": [NUMBER, OTHER]}
    assert NUMBER in error["message"] and OTHER in error["message"]
    assert (await api.ok("GET", _agent(agent)))["archived_at"] is None

    await api.ok("DELETE", f"/v1/channels/{OTHER}", 204)
    await api.ok("PUT", f"/v1/channels/{NUMBER}", json={"agent_id": other["id"], "version": 1})
    assert (await api.ok("POST", _agent(agent) + "/archive"))["archived_at"] is not None


async def test_an_archive_racing_a_pin_never_leaves_a_channel_on_an_archived_agent(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    for attempt in range(10):
        agent = await make_agent(versions=1)
        number = f"+1415555{attempt:04d}"
        pin = api.call("PUT", f"/v1/channels/{number}", json={"agent_id": agent["id"]})
        archive = api.call("POST", _agent(agent) + "/archive")
        pinned, archived = await asyncio.gather(pin, archive)
        # Exactly one wins: the pin (then the archive is 409) or the archive (the pin is 422).
        assert sorted([pinned.status, archived.status]) in ([200, 409], [200, 422])
        routed = await pool.fetchval(
            "SELECT count(*) FROM channel_variants v JOIN agents a ON a.id = v.agent_id "
            "WHERE a.archived_at IS NOT NULL"
        )
        assert routed == 0


@pytest.mark.parametrize("value", ["yes", "", "TRUE ", "none", "2"])
async def test_a_bad_archived_filter_is_400(api: Api, value: str) -> None:
    error = (await api.ok("GET", f"/v1/agents?archived={value}", 400))["error"]
    assert error["details"][0]["path"] == "archived"


@pytest.mark.parametrize("agent_id", ["agt_0000000000000000", "x' OR '1'='1", "🚀", "a" * 5000])
async def test_archiving_an_unknown_agent_is_404(api: Api, agent_id: str) -> None:
    for action in ("archive", "unarchive"):
        error = (await api.ok("POST", f"/v1/agents/{agent_id}/{action}", 404))["error"]
        assert error["code"] == "agent_not_found"


async def test_archive_takes_no_body_and_a_viewer_or_editor_cannot(
    api: Api, make_agent: AgentFactory
) -> None:
    agent = await make_agent()
    for role in ("viewer", "editor", "runtime"):
        await api.ok("POST", _agent(agent) + "/archive", 403, role=role)
    # A body is ignored, whatever it holds: the action is the URL.
    archived = await api.ok("POST", _agent(agent) + "/archive", json={"archived_at": None})
    assert archived["archived_at"] is not None

"""Tokens limited to some agents (scopes): every agent-, version-, call-, channel- and
analytics-reading or -writing endpoint of the admin API and the router's runtime lookups answer
a request outside the scopes as if the resource did not exist (404, never data), and work on
the token's own agents; listings show only what is in scope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import AgentFactory, Api, minimal_config
from tests.router_fixtures import RouterClient, Webhooks, pin

OURS, THEIRS = "+14155550101", "+14155550102"


@dataclass
class World:
    """Two agents, each with a version, a channel and a call: `ours` is in the token's scope."""

    ours: dict[str, Any]
    theirs: dict[str, Any]
    tokens: dict[str, str]  # role → a token of that role limited to `ours`

    def path(self, template: str, side: str) -> str:
        values = self.ours if side == "ours" else self.theirs
        return template.format(**values, quoted_number=quote(values["number"]))


@pytest.fixture
async def world(
    api: Api, make_agent: AgentFactory, webhooks: Webhooks, router: RouterClient
) -> World:
    sides = {}
    for side, number in (("ours", OURS), ("theirs", THEIRS)):
        agent = await make_agent(versions=1, name=f"Agent of {side}")
        await pin(api, {"agent_id": agent["id"], "version": 1}, number)
        # The router reads Postgres for a number it never saw, so the call lands at once.
        params = await webhooks.twilio_call(f"CA{side}", to=number)
        sides[side] = {
            "agent_id": agent["id"],
            "number": number,
            "call_id": params["call_id"],
            "config_hash": params["config_hash"],
        }
    tokens = {}
    for role in ("publisher", "runtime"):
        made = await api.ok(
            "POST",
            "/v1/tokens",
            201,
            json={"name": f"team-{role}", "role": role, "scopes": [sides["ours"]["agent_id"]]},
        )
        tokens[role] = made["token"]
    return World(sides["ours"], sides["theirs"], tokens)


ANALYSIS = {"sentiment": "positive", "automated": True, "fields": {}}
GUARDRAILS = {"rules": [{"metric": "automation_rate", "op": "<", "threshold": 0.5}]}
# (service, role, method, path template, body, status on our own agent's resource)
ENDPOINTS: list[tuple[str, str, str, str, Any, int]] = [
    ("admin", "publisher", "GET", "/v1/agents/{agent_id}", None, 200),
    ("admin", "publisher", "GET", "/v1/agents/{agent_id}/draft", None, 200),
    ("admin", "publisher", "PUT", "/v1/agents/{agent_id}/draft", {"config": minimal_config()}, 200),
    (
        "admin",
        "publisher",
        "PATCH",
        "/v1/agents/{agent_id}/draft",
        {"config": {"welcome_message": "Hi"}},
        200,
    ),
    (
        "admin",
        "publisher",
        "POST",
        "/v1/agents/{agent_id}/versions",
        {"name": "v2", "allow_unchanged": True},
        201,
    ),
    ("admin", "publisher", "GET", "/v1/agents/{agent_id}/versions", None, 200),
    ("admin", "publisher", "GET", "/v1/agents/{agent_id}/versions/1", None, 200),
    ("admin", "publisher", "GET", "/v1/agents/{agent_id}/versions/1/diff", None, 200),
    ("admin", "publisher", "POST", "/v1/agents/{agent_id}/versions/1/restore", None, 200),
    ("admin", "publisher", "GET", "/v1/channels/{number}", None, 200),
    ("admin", "publisher", "DELETE", "/v1/channels/{number}", None, 204),
    ("admin", "publisher", "GET", "/v1/channels/{number}/guardrails", None, 200),
    ("admin", "publisher", "PUT", "/v1/channels/{number}/guardrails", GUARDRAILS, 200),
    ("admin", "publisher", "GET", "/v1/calls/{call_id}", None, 200),
    ("admin", "runtime", "GET", "/v1/calls/{call_id}", None, 200),
    ("admin", "runtime", "POST", "/v1/calls/{call_id}/analysis", ANALYSIS, 200),
    ("admin", "publisher", "GET", "/v1/analytics/versions?agent_id={agent_id}", None, 200),
    ("admin", "publisher", "GET", "/v1/analytics/ab?channel={quoted_number}", None, 200),
    ("router", "runtime", "GET", "/v1/calls/{call_id}/config", None, 200),
    ("router", "runtime", "GET", "/v1/configs/{config_hash}", None, 200),
]


@pytest.mark.parametrize(
    ("service", "role", "method", "template", "body", "ok"),
    ENDPOINTS,
    ids=[f"{s} {r} {m} {t}" for s, r, m, t, _, _ in ENDPOINTS],
)
async def test_outside_its_scopes_a_token_gets_404_and_inside_it_works(
    api: Api,
    router: RouterClient,
    world: World,
    service: str,
    role: str,
    method: str,
    template: str,
    body: Any,
    ok: int,
) -> None:
    client = api.client if service == "admin" else router
    headers = {"Authorization": f"Bearer {world.tokens[role]}"}

    async def send(side: str) -> tuple[int, Any]:
        resp = await client.request(method, world.path(template, side), json=body, headers=headers)
        return resp.status, await resp.json() if resp.status != 204 else None

    status, answer = await send("theirs")
    assert status == 404, answer
    # Exactly what an unknown resource gets: nothing tells it exists.
    assert answer["error"]["code"].endswith("_not_found"), answer
    assert world.theirs["agent_id"] not in str(answer) or "agent" in answer["error"]["code"]
    status, answer = await send("ours")
    assert status == ok, answer


async def test_their_resources_are_untouched_by_refused_writes(
    api: Api, world: World, router: RouterClient
) -> None:
    for method, path, body in [
        ("PUT", "/v1/agents/{agent_id}/draft", {"config": minimal_config(name="Hijacked")}),
        ("POST", "/v1/agents/{agent_id}/versions", {"name": "v2"}),
        ("DELETE", "/v1/channels/{number}", None),
        ("POST", "/v1/calls/{call_id}/analysis", ANALYSIS),
    ]:
        headers = {"Authorization": f"Bearer {world.tokens['publisher']}"}
        resp = await api.client.request(
            method, world.path(path, "theirs"), json=body, headers=headers
        )
        assert resp.status == 404
    agent = await api.ok("GET", world.path("/v1/agents/{agent_id}", "theirs"))
    assert agent["name"] != "Hijacked" and agent["latest_version"] == 1
    await api.ok("GET", world.path("/v1/channels/{number}", "theirs"))
    call = await api.ok("GET", world.path("/v1/calls/{call_id}", "theirs"))
    assert call["analysis"] is None


async def test_a_channel_cannot_be_pointed_at_their_agent(api: Api, world: World) -> None:
    headers = {"Authorization": f"Bearer {world.tokens['publisher']}"}
    for number in (OURS, "+14155550109"):  # ours, and a new one
        resp = await api.client.put(
            f"/v1/channels/{number}",
            json={"agent_id": world.theirs["agent_id"], "version": 1},
            headers=headers,
        )
        answer = await resp.json()
        assert resp.status == 422, answer
        assert answer["error"]["details"][0]["message"] == f"no agent {world.theirs['agent_id']}"
    # Their channel cannot be taken over either, even pointed at our agent.
    resp = await api.client.put(
        f"/v1/channels/{THEIRS}",
        json={"agent_id": world.ours["agent_id"], "version": 1},
        headers=headers,
    )
    assert resp.status == 404


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/v1/agents", "id"),
        ("/v1/channels", "number"),
        ("/v1/calls", "call_id"),
        ("/v1/audit", "agent_id"),
    ],
)
async def test_listings_show_only_what_is_in_scope(
    api: Api, world: World, path: str, key: str
) -> None:
    headers = {"Authorization": f"Bearer {world.tokens['publisher']}"}
    resp = await api.client.get(path, headers=headers)
    items = (await resp.json())["items"]
    everything = (await api.ok("GET", path))["items"]
    ours = {world.ours["agent_id"], world.ours["number"], world.ours["call_id"]}
    assert items and {i[key] for i in items} <= ours
    assert len(everything) > len(items)


@pytest.mark.parametrize("service", ["admin", "router"])
async def test_the_dry_run_knows_no_channel_outside_the_scopes(
    api: Api, router: RouterClient, world: World, service: str
) -> None:
    client = api.client if service == "admin" else router
    role = "publisher" if service == "admin" else "runtime"
    headers = {"Authorization": f"Bearer {world.tokens[role]}"}
    theirs = await client.get("/v1/resolve", params={"to": THEIRS}, headers=headers)
    assert await theirs.json() == {
        "to": THEIRS,
        "from": "",
        "rule": "fallback",
        "reason": "unknown_number",
    }
    ours = await client.get("/v1/resolve", params={"to": OURS}, headers=headers)
    assert (await ours.json())["agent_id"] == world.ours["agent_id"]


async def test_a_scoped_token_cannot_create_agents(api: Api, world: World) -> None:
    headers = {"Authorization": f"Bearer {world.tokens['publisher']}"}
    resp = await api.client.post("/v1/agents", json={"config": minimal_config()}, headers=headers)
    assert resp.status == 403


async def test_whoami_names_the_scopes(api: Api, world: World) -> None:
    headers = {"Authorization": f"Bearer {world.tokens['runtime']}"}
    resp = await api.client.get("/v1/whoami", headers=headers)
    assert await resp.json() == {
        "name": "team-runtime",
        "role": "runtime",
        "scopes": [world.ours["agent_id"]],
    }

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse
from openapi_spec_validator import validate

from store.schemas import EXAMPLE_AGENT, EXAMPLE_NUMBER
from store.settings import Settings
from tests.call_rows import Outcome, insert_calls
from tests.conftest import AgentFactory, Api, minimal_config, variant
from tests.openapi_documents import (
    admin_document,
    admin_endpoints,
    body_examples,
    conforms,
    documented_endpoints,
    router_document,
    router_endpoints,
    success_status,
)
from tests.router_fixtures import CHANNEL, RouterClient, Webhooks

NUMBER = "+14155550100"


@pytest.fixture
def admin_doc(settings: Settings) -> dict[str, Any]:
    return admin_document(settings)


@pytest.fixture
def router_doc(router_settings: Settings) -> dict[str, Any]:
    return router_document(router_settings)


def test_the_documents_are_valid_openapi(
    admin_doc: dict[str, Any], router_doc: dict[str, Any]
) -> None:
    validate(admin_doc)
    validate(router_doc)


def test_every_route_is_documented_and_nothing_else(
    settings: Settings,
    router_settings: Settings,
    admin_doc: dict[str, Any],
    router_doc: dict[str, Any],
) -> None:
    assert documented_endpoints(admin_doc) == admin_endpoints(settings)
    assert documented_endpoints(router_doc) == router_endpoints(router_settings)


def test_every_reference_resolves(admin_doc: dict[str, Any], router_doc: dict[str, Any]) -> None:
    for doc in (admin_doc, router_doc):
        text = json.dumps(doc)
        for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
            node: Any = doc
            for segment in ref.removeprefix("#/").split("/"):
                node = node[segment]
            assert isinstance(node, dict), ref


async def test_the_documents_are_served_without_a_token(
    api: Api, router: RouterClient, admin_doc: dict[str, Any], router_doc: dict[str, Any]
) -> None:
    assert await api.ok("GET", "/openapi.json", role=None) == json.loads(json.dumps(admin_doc))
    resp = await router.get("/openapi.json")
    assert resp.status == 200
    assert await resp.json() == json.loads(json.dumps(router_doc))


def test_required_fields_are_documented(admin_doc: dict[str, Any]) -> None:
    schemas = admin_doc["components"]["schemas"]
    assert set(schemas["Analysis"]["required"]) == {"sentiment", "automated"}
    assert schemas["Pin"]["required"] == ["agent_id"]
    assert schemas["Variants"]["required"] == ["variants"]


async def _conforms(doc: dict[str, Any], resp: ClientResponse, method: str, template: str) -> Any:
    """Assert that a real response matches the document; returns its JSON body."""
    body = await resp.json() if resp.content_type == "application/json" else None
    conforms(doc, template, method, resp.status, body)
    return body


async def test_responses_match_the_documented_schemas(
    api: Api, make_agent: AgentFactory, admin_doc: dict[str, Any]
) -> None:
    agent = await make_agent(versions=2, tools=[{"name": "t", "type": "webhook"}])
    a = f"/v1/agents/{agent['id']}"
    variants = [variant(agent, "a", 1, 1), variant(agent, "b", None, 1)]
    # (method, template, concrete path, JSON body or None, role)
    calls: list[tuple[str, str, str, Any, str | None]] = [
        ("POST", "/v1/agents", "/v1/agents", {"config": minimal_config()}, "editor"),
        ("POST", "/v1/agents", "/v1/agents", {"config": {"llm": 1}}, "editor"),
        ("GET", "/v1/agents", "/v1/agents?limit=1", None, "viewer"),
        ("GET", "/v1/agents", "/v1/agents?cursor=x", None, "viewer"),
        ("GET", "/v1/agents/{agent_id}", a, None, None),
        ("GET", "/v1/agents/{agent_id}", a, None, "runtime"),
        ("GET", "/v1/agents/{agent_id}", "/v1/agents/nope", None, "viewer"),
        ("GET", "/v1/agents/{agent_id}/draft", a + "/draft", None, "viewer"),
        (
            "PATCH",
            "/v1/agents/{agent_id}/draft",
            a + "/draft",
            {"config": {"llm": {"temperature": 1}}},
            "editor",
        ),
        (
            "PUT",
            "/v1/agents/{agent_id}/draft",
            a + "/draft",
            {"config": minimal_config()},
            "editor",
        ),
        ("POST", "/v1/agents/{agent_id}/versions", a + "/versions", {"name": "v3"}, "publisher"),
        ("GET", "/v1/agents/{agent_id}/versions", a + "/versions?limit=2", None, "viewer"),
        ("GET", "/v1/agents/{agent_id}/versions/{n}", a + "/versions/1", None, "viewer"),
        (
            "GET",
            "/v1/agents/{agent_id}/versions/{n}/diff",
            a + "/versions/1/diff?against=3",
            None,
            "viewer",
        ),
        ("GET", "/v1/agents/{agent_id}/versions/{n}/diff", a + "/versions/1/diff", None, "viewer"),
        (
            "POST",
            "/v1/agents/{agent_id}/versions/{n}/restore",
            a + "/versions/1/restore",
            None,
            "publisher",
        ),
        (
            "PUT",
            "/v1/channels/{number}",
            f"/v1/channels/{NUMBER}",
            {"variants": variants},
            "publisher",
        ),
        ("PUT", "/v1/channels/{number}", f"/v1/channels/{NUMBER}", {"agent_id": "x"}, "publisher"),
        ("GET", "/v1/channels/{number}", f"/v1/channels/{NUMBER}", None, "viewer"),
        ("GET", "/v1/channels", "/v1/channels", None, "viewer"),
        ("GET", "/v1/audit", "/v1/audit?limit=3", None, "viewer"),
        ("POST", "/v1/tokens", "/v1/tokens", {"name": "n", "role": "viewer"}, "admin"),
        ("GET", "/v1/whoami", "/v1/whoami", None, "runtime"),
        ("POST", "/v1/agents/{agent_id}/archive", a + "/archive", None, "publisher"),
        ("DELETE", "/v1/channels/{number}", f"/v1/channels/{NUMBER}", None, "publisher"),
        ("DELETE", "/v1/channels/{number}", f"/v1/channels/{NUMBER}", None, "publisher"),
        ("POST", "/v1/agents/{agent_id}/archive", a + "/archive", None, "publisher"),
        ("GET", "/v1/agents", "/v1/agents?archived=true", None, "viewer"),
        ("GET", "/v1/agents", "/v1/agents?archived=maybe", None, "viewer"),
        ("POST", "/v1/agents/{agent_id}/unarchive", a + "/unarchive", None, "publisher"),
        ("POST", "/v1/agents/{agent_id}/unarchive", "/v1/agents/nope/unarchive", None, "admin"),
    ]
    statuses = []
    for method, template, path, body, role in calls:
        resp = await api.call(method, path, json=body, role=role)
        await _conforms(admin_doc, resp, method, template)
        statuses.append(resp.status)
    assert statuses == [
        201,
        422,
        200,
        400,
        401,
        403,
        404,
        200,
        200,
        200,
        201,
        200,
        200,
        200,
        200,
        200,
        200,
        422,
        200,
        200,
        200,
        201,
        200,
        409,
        204,
        404,
        200,
        200,
        400,
        200,
        404,
    ]


async def test_every_admin_body_example_gets_the_documented_success(
    api: Api, pool: asyncpg.Pool, make_pinned_agent: AgentFactory, admin_doc: dict[str, Any]
) -> None:
    # Guardrails need a routed channel, an analysis a call; the examples name a made-up agent.
    # A rollout's example targets version 2.
    agent = await make_pinned_agent(versions=2, pinned=1, number=EXAMPLE_NUMBER)
    [call_id] = await insert_calls(pool, agent["id"], 1, [Outcome()], channel=EXAMPLE_NUMBER)
    values = {"agent_id": agent["id"], "n": "1", "number": EXAMPLE_NUMBER, "call_id": call_id}
    sent = 0
    for template, operations in admin_doc["paths"].items():
        for method, operation in operations.items():
            if "requestBody" not in operation:
                continue
            for example in body_examples(admin_doc, operation):
                body = json.loads(json.dumps(example).replace(EXAMPLE_AGENT, agent["id"]))
                resp = await api.call(method.upper(), template.format(**values), json=body)
                assert resp.status == success_status(operation), (template, await resp.text())
                await _conforms(admin_doc, resp, method, template)
                sent += 1
    assert sent >= 9


async def test_every_router_body_example_gets_the_documented_success(
    webhooks: Webhooks, make_pinned_agent: AgentFactory, router_doc: dict[str, Any]
) -> None:
    await make_pinned_agent(versions=1, pinned=1, number=EXAMPLE_NUMBER)
    senders: dict[str, Callable[[Any], Awaitable[ClientResponse]]] = {
        "/webhooks/twilio/voice": lambda ex: webhooks.twilio("/webhooks/twilio/voice", ex),
        "/webhooks/twilio/status": lambda ex: webhooks.twilio("/webhooks/twilio/status", ex),
        "/webhooks/telnyx": webhooks.telnyx,
        "/webhooks/generic/call": webhooks.generic,
        "/webhooks/generic/ended": lambda ex: webhooks.generic(ex, path="/webhooks/generic/ended"),
    }
    with_bodies = {
        path
        for path, operations in router_doc["paths"].items()
        for operation in operations.values()
        if "requestBody" in operation
    }
    assert with_bodies == set(senders)
    for template, send in senders.items():
        operation = router_doc["paths"][template]["post"]
        for example in body_examples(router_doc, operation):
            resp = await send(example)
            assert resp.status == success_status(operation), (template, await resp.text())
            await _conforms(router_doc, resp, "POST", template)


async def test_router_answers_match_its_document(
    api: Api, webhooks: Webhooks, make_pinned_agent: AgentFactory, router_doc: dict[str, Any]
) -> None:
    await make_pinned_agent(versions=1, pinned=1)
    call = await webhooks.generic_call("c-doc")
    token = api.bearer("runtime")
    calls = [
        ("/v1/calls/{call_id}/config", f"/v1/calls/{call['call_id']}/config", token),
        ("/v1/calls/{call_id}/config", "/v1/calls/nope/config", token),
        ("/v1/configs/{config_hash}", f"/v1/configs/{call['config_hash']}", token),
        ("/v1/configs/{config_hash}", "/v1/configs/" + "0" * 64, token),
        ("/v1/resolve", f"/v1/resolve?to={CHANNEL}&from=%2B1555", token),
        ("/v1/resolve", "/v1/resolve?to=%2B1999", token),
        ("/v1/resolve", "/v1/resolve", token),
        ("/v1/resolve", "/v1/resolve?to=x", {}),
        ("/healthz", "/healthz", {}),
        ("/readyz", "/readyz", {}),
        ("/metrics", "/metrics", {}),
    ]
    statuses = []
    for template, path, headers in calls:
        resp = await webhooks.client.get(path, headers=headers)
        await _conforms(router_doc, resp, "GET", template)
        statuses.append(resp.status)
    assert statuses == [200, 404, 200, 404, 200, 200, 400, 401, 200, 200, 200]

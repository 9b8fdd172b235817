"""The OpenAPI document: a valid OpenAPI 3.1 document that describes every route the admin app
serves, and whose schemas the real responses satisfy."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import ClientResponse
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from admin import webconsole
from admin.app import create_app
from admin.openapi import DOCUMENT
from store.settings import Settings
from tests.conftest import AgentFactory, Api, minimal_config

NUMBER = "+14155550100"


def app_endpoints(settings: Settings) -> set[tuple[str, str]]:
    """(method, path template) of every route the admin app serves, but the web console's
    pages, which are HTML for browsers rather than API."""
    console = {(route.method, route.path) for route in webconsole.routes()}
    return {
        (route.method, route.resource.canonical)
        for route in create_app(settings).router.routes()
        if route.method != "HEAD" and route.resource is not None
    } - console


def documented_endpoints() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, operations in DOCUMENT["paths"].items()
        for method in operations
    }


def test_the_document_is_valid_openapi() -> None:
    validate(DOCUMENT)


def test_every_route_is_documented_and_nothing_else(settings: Settings) -> None:
    assert documented_endpoints() == app_endpoints(settings)


def test_every_reference_resolves() -> None:
    text = json.dumps(DOCUMENT)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        node: Any = DOCUMENT
        for segment in ref.removeprefix("#/").split("/"):
            node = node[segment]
        assert isinstance(node, dict), ref


async def test_the_document_is_served_without_a_token(api: Api) -> None:
    assert await api.ok("GET", "/openapi.json", role=None) == json.loads(json.dumps(DOCUMENT))


def _response_schema(method: str, template: str, status: int) -> dict[str, Any] | None:
    """The documented body schema of that response; fails when the status is undocumented."""
    responses = DOCUMENT["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, (method, template, status)
    response = responses[str(status)]
    if "$ref" in response:
        response = DOCUMENT["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    content = response.get("content", {}).get("application/json")
    return None if content is None else dict(content["schema"])


async def _conforms(resp: ClientResponse, method: str, template: str) -> Any:
    """Assert that a real response matches the document; returns its JSON body."""
    schema = _response_schema(method, template, resp.status)
    if schema is None:
        return None
    body = await resp.json()
    # The components travel with the schema so that its "#/components/..." refs resolve.
    OAS31Validator({**schema, "components": DOCUMENT["components"]}).validate(body)
    return body


async def test_responses_match_the_documented_schemas(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent(versions=2, tools=[{"name": "t", "type": "webhook"}])
    a = f"/v1/agents/{agent['id']}"
    variants = [
        {"label": "a", "agent_id": agent["id"], "version": 1, "weight": 1},
        {"label": "b", "agent_id": agent["id"], "version": None, "weight": 1},
    ]
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
        ("DELETE", "/v1/channels/{number}", f"/v1/channels/{NUMBER}", None, "publisher"),
        ("DELETE", "/v1/channels/{number}", f"/v1/channels/{NUMBER}", None, "publisher"),
    ]
    statuses = []
    for method, template, path, body, role in calls:
        resp = await api.call(method, path, json=body, role=role)
        await _conforms(resp, method, template)
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
        204,
        404,
    ]

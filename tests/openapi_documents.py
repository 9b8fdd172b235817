"""The OpenAPI documents of both services, generated as their /openapi.json serves them, and a
check that a real response conforms to its document."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from openapi_schema_validator import OAS31Validator

from admin import routes as admin_routes
from admin import webconsole
from admin.app import create_app as create_admin
from httpkit.openapi import document
from router import routes as router_routes
from router.app import create_app as create_router
from store.settings import Settings


def admin_document(settings: Settings) -> dict[str, Any]:
    return document(create_admin(settings), admin_routes.INFO)


def router_document(settings: Settings) -> dict[str, Any]:
    return document(create_router(settings), router_routes.INFO)


def _endpoints(app: web.Application) -> set[tuple[str, str]]:
    """(method, path template) of every route the app serves, but HEAD."""
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }


def admin_endpoints(settings: Settings) -> set[tuple[str, str]]:
    """Every endpoint of the admin app but the web console's pages, which are HTML for browsers
    rather than API."""
    console = {(route.method, route.path) for route in webconsole.routes()}
    return _endpoints(create_admin(settings)) - console


def router_endpoints(settings: Settings) -> set[tuple[str, str]]:
    return _endpoints(create_router(settings))


def documented_endpoints(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, operations in doc["paths"].items() for method in operations
    }


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node`, or what its `$ref` points at within `doc`."""
    while "$ref" in node:
        found: Any = doc
        for segment in node["$ref"].removeprefix("#/").split("/"):
            found = found[segment]
        node = found
    return node


def success_status(operation: dict[str, Any]) -> int:
    return min(int(status) for status in operation["responses"] if status.startswith("2"))


def body_examples(doc: dict[str, Any], operation: dict[str, Any]) -> list[Any]:
    """Every example of an operation's request body (each alternative's, for a union)."""
    schema = next(iter(operation["requestBody"]["content"].values()))["schema"]
    examples = []
    for alternative in schema.get("anyOf", [schema]):
        found = resolve(doc, alternative).get("examples")
        assert found, (operation["summary"], alternative)
        examples.extend(found)
    return examples


def conforms(doc: dict[str, Any], template: str, method: str, status: int, body: Any) -> None:
    """Assert that a response body matches what `doc` says that status of that operation
    answers; fails when the status is undocumented."""
    responses = doc["paths"][template][method.lower()]["responses"]
    assert str(status) in responses, (method, template, status)
    content = resolve(doc, responses[str(status)]).get("content", {}).get("application/json")
    if content is None:
        return
    # The components travel with the schema so that its "#/components/..." refs resolve.
    OAS31Validator({**content["schema"], "components": doc["components"]}).validate(body)

"""The OpenAPI 3.1 document of an application, generated from the endpoints its routes declare
(httpkit.endpoint) and their pydantic models: nothing is described twice."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from httpkit.auth import View
from httpkit.endpoint import JSON, Endpoint, Raw, endpoint, endpoint_of
from httpkit.json import dumps

SCHEMAS = "#/components/schemas/"


class Shape(BaseModel):
    """A documented JSON object that holds its documented fields only."""

    model_config = ConfigDict(extra="forbid")


class ErrorBody(Shape):
    code: str = Field(description="stable machine-readable name")
    message: str
    details: Any = Field(
        description="what exactly failed, e.g. [{path, message}] naming each invalid field"
    )


class Error(Shape):
    error: ErrorBody


# Error responses by status; every one carries the Error body.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Malformed JSON, body, query or cursor"),
    401: ("Unauthorized", "No token, or not a valid one"),
    403: ("Forbidden", "The token's role is too low, or a webhook signature is not valid"),
    404: ("NotFound", "No such resource"),
    409: ("Conflict", "The change conflicts with the current state"),
    412: ("PreconditionFailed", "If-Match names a revision that is not the current one"),
    413: ("PayloadTooLarge", "The request body is larger than the service accepts"),
    415: ("UnsupportedMediaType", "The body is not sent as application/json"),
    422: ("Unprocessable", "The document is invalid; details name each field path"),
    503: ("Unavailable", "A dependency is unavailable; retry"),
}
AUTH_ERRORS = (401, 403)


class _Components:
    """The schemas referred to so far, by name; a name means one schema only."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def _add(self, name: str, schema: Any) -> None:
        if self.schemas.setdefault(name, schema) != schema:
            raise ValueError(f"two different schemas are named {name}")

    def _inline(self, shape: Any) -> dict[str, Any]:
        """The JSON schema of `shape` itself; the models it refers to become components."""
        schema = TypeAdapter(shape).json_schema(ref_template=SCHEMAS + "{model}")
        for name, definition in schema.pop("$defs", {}).items():
            self._add(name, definition)
        return schema

    def schema(self, shape: Any) -> dict[str, Any]:
        """A JSON schema for a model or type; models become components, referred to by $ref."""
        schema = self._inline(shape)
        if isinstance(shape, type) and issubclass(shape, BaseModel):
            self._add(shape.__name__, schema)
            return {"$ref": SCHEMAS + shape.__name__}
        return schema

    def content(self, shape: Any, media_types: tuple[str, ...] = (JSON,)) -> dict[str, Any]:
        if isinstance(shape, Raw):
            shape = (shape,)
        if isinstance(shape, tuple) and all(isinstance(raw, Raw) for raw in shape):
            return {raw.media_type: {"schema": _raw_schema(raw)} for raw in shape}
        return {media_type: {"schema": self.schema(shape)} for media_type in media_types}

    def parameters(self, model: type[BaseModel] | None, where: str) -> list[dict[str, Any]]:
        """A model's fields as parameters `in` query, path or header (by their aliases)."""
        if model is None:
            return []
        schema = self._inline(model)
        required = schema.get("required", [])
        found = []
        for name, prop in schema["properties"].items():
            prop = _never_null({k: v for k, v in prop.items() if k != "title"})
            parameter = {"name": name, "in": where, "required": where == "path" or name in required}
            if "description" in prop:
                parameter["description"] = prop.pop("description")
            found.append({**parameter, "schema": prop})
        return found


def _raw_schema(raw: Raw) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    if raw.description:
        schema["description"] = raw.description
    return schema


def _never_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's schema without the null of an optional field: an absent parameter is what
    None stands for, and a query string cannot carry a null."""
    alternatives = [a for a in schema.get("anyOf", ()) if a != {"type": "null"}]
    if len(alternatives) == 1:
        schema = {**{k: v for k, v in schema.items() if k != "anyOf"}, **alternatives[0]}
    return {k: v for k, v in schema.items() if not (k == "default" and v is None)}


def _operation(described: Endpoint, components: _Components) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": described.summary}
    errors = set(described.errors)
    if described.roles:
        operation["description"] = (
            f"Needs the {' or '.join(described.roles)} role (or a higher one)."
        )
        operation["security"] = [{"bearer": []}]
        errors.update(AUTH_ERRORS)
    else:
        operation["security"] = []
    parameters = [
        *components.parameters(described.path, "path"),
        *components.parameters(described.query, "query"),
        *components.parameters(described.headers, "header"),
    ]
    if parameters:
        operation["parameters"] = parameters
    if described.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": components.content(described.body, described.media_types),
        }
        errors.update(described.body_errors)
    responses: dict[int, Any] = {}
    for status, shape in described.responses.items():
        responses[status] = {"description": HTTPStatus(status).phrase}
        if shape is not None:
            responses[status]["content"] = components.content(shape)
        if described.response_headers and status < 300:
            responses[status]["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in described.response_headers.items()
            }
    for status in errors - set(responses):
        responses[status] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    operation["responses"] = {str(status): responses[status] for status in sorted(responses)}
    return operation


def document(app: web.Application, info: Mapping[str, str]) -> dict[str, Any]:
    """The OpenAPI document of every route of `app` whose handler declares an endpoint."""
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        described = endpoint_of(route.handler)
        if described is None or route.resource is None or route.method == "HEAD":
            continue
        operations = paths.setdefault(route.resource.canonical, {})
        operations[route.method.lower()] = _operation(described, components)
    components.schema(Error)
    return {
        "openapi": "3.1.0",
        "info": {"version": "1", **info},
        "paths": paths,
        "components": {
            "schemas": dict(sorted(components.schemas.items())),
            "responses": {
                name: {"description": text, "content": components.content(Error)}
                for name, text in ERRORS.values()
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def view(info: Mapping[str, str]) -> View:
    """A GET /openapi.json handler for one application. It is public, so tools (and the console,
    for its limits) read it without a token; it is generated on the first request, when the
    routes are final, and kept."""
    encoded: bytes | None = None

    @endpoint("This document", responses={200: dict[str, Any]})
    async def serve(request: web.Request) -> web.Response:
        nonlocal encoded
        if encoded is None:
            encoded = dumps(document(request.app, info)).encode()
        return web.Response(body=encoded, content_type=JSON)

    return serve

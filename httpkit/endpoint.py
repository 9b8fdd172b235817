"""What each handler accepts and answers, declared beside it: the role it needs (enforced here),
its parameters, body and responses (documented by the OpenAPI generator in httpkit.openapi)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from httpkit.auth import View, requires

JSON = "application/json"
# What reading a JSON body with httpkit.json and validating it may answer: malformed, too large,
# not sent as JSON, invalid.
JSON_BODY_ERRORS = (400, 413, 415, 422)


@dataclass(frozen=True)
class Raw:
    """A body that is not JSON, e.g. TwiML or the Prometheus exposition. A response may be a
    tuple of them: one answer in several media types, chosen by the request."""

    media_type: str
    description: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """One operation. Schemas are pydantic models or types (a union of models, `list[...]`),
    `Raw` for other media, or None for a response without a body."""

    summary: str
    roles: tuple[str, ...]
    responses: Mapping[int, Any]
    body: Any = None
    media_types: tuple[str, ...] = (JSON,)
    path: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    headers: type[BaseModel] | None = None
    # Response headers of the success answers, by name: what each one means.
    response_headers: Mapping[str, str] = field(default_factory=dict)
    # What reading the body may answer; the webhooks read theirs raw, verified before parsed.
    body_errors: tuple[int, ...] = JSON_BODY_ERRORS
    # Error statuses beyond those implied by the role (401, 403) and the body.
    errors: tuple[int, ...] = ()


# Each described handler's description. Not an attribute of the handler: a handler compiled
# with mypyc (scripts/compile) has no __dict__ to hold one.
_DESCRIBED: dict[object, Endpoint] = {}


def endpoint(
    summary: str,
    *,
    role: str | tuple[str, ...] | None = None,
    responses: Mapping[int, Any],
    body: Any = None,
    media_types: tuple[str, ...] = (JSON,),
    path: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    headers: type[BaseModel] | None = None,
    response_headers: Mapping[str, str] | None = None,
    body_errors: tuple[int, ...] = JSON_BODY_ERRORS,
    errors: tuple[int, ...] = (),
    checks_role_itself: bool = False,
) -> Callable[[View], View]:
    """Describe a handler; with `role` (the lowest allowed, or several ladders) it runs only for
    tokens that hold it (see httpkit.auth.requires). None: no token needed.
    `checks_role_itself`: the handler calls httpkit.auth.authorize itself (a fast lane's view,
    httpkit/fastlane.py, whose lane must check it too); `role` is then documented only."""
    roles = (role,) if isinstance(role, str) else (role or ())
    described = Endpoint(
        summary=summary,
        roles=roles,
        responses=responses,
        body=body,
        media_types=media_types,
        path=path,
        query=query,
        headers=headers,
        response_headers=response_headers or {},
        body_errors=body_errors,
        errors=errors,
    )

    def decorate(view: View) -> View:
        handler = requires(*roles)(view) if roles and not checks_role_itself else view
        _DESCRIBED[handler] = described
        return handler

    return decorate


def endpoint_of(handler: object) -> Endpoint | None:
    """The description a handler was declared with, if any."""
    return _DESCRIBED.get(handler)

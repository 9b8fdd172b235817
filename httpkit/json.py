"""JSON in and out: strict parsing of request bodies, one encoder for responses."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aiohttp import web

from httpkit.errors import ApiError

JSON_TYPES = ("application/json", "application/merge-patch+json")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


def dumps(data: Any) -> str:
    return json.dumps(data, default=_default, ensure_ascii=False, allow_nan=False)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=dumps(data), status=status, headers=headers, content_type="application/json"
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> Any:
    """Decode a JSON document strictly (no NaN/Infinity); ApiError 400 when malformed."""
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None


async def read_json(request: web.Request) -> Any:
    """The request's JSON body; 400 when missing or malformed (413 is raised by aiohttp)."""
    if request.content_type not in JSON_TYPES:
        raise ApiError(
            415 if request.body_exists else 400,
            "unsupported_media_type" if request.body_exists else "missing_body",
            "send a JSON body with Content-Type: application/json",
        )
    return parse_json(await request.read())


async def read_object(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "malformed_body", "request body must be a JSON object")
    return body

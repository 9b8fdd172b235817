"""JSON in and out: strict parsing of request bodies, one encoder for responses."""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from aiohttp import web

from httpkit.errors import ApiError

JSON_TYPES = ("application/json", "application/merge-patch+json")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")


# Built once: json.dumps with any option builds a JSONEncoder per call, a quarter of the cost of
# encoding a small answer (a runtime config lookup's head, an error).
_ENCODER = json.JSONEncoder(default=_default, ensure_ascii=False, allow_nan=False)


def dumps(data: Any) -> str:
    return _ENCODER.encode(data)


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        text=dumps(data), status=status, headers=headers, content_type="application/json"
    )


# Configurations nest a few levels (workflows perhaps a dozen); anything deeper is hostile and
# would exhaust the recursion of validation, hashing and diffing further in.
MAX_JSON_DEPTH = 64


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # `1e400` is valid JSON syntax but overflows to infinity, which no JSON output can carry.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def _check_depth(document: Any) -> None:
    """ValueError when objects and arrays nest more than MAX_JSON_DEPTH deep (no recursion)."""
    containers = [document]
    for _ in range(MAX_JSON_DEPTH + 1):
        containers = [node for node in containers if isinstance(node, dict | list)]
        if not containers:
            return
        containers = [c for n in containers for c in (n.values() if isinstance(n, dict) else n)]
    raise ValueError(f"nesting deeper than {MAX_JSON_DEPTH} levels")


def parse_json(raw: bytes) -> Any:
    """Decode a JSON document strictly; ApiError 400 when malformed.

    Refused beyond plain syntax: NaN/Infinity, numbers too large for a double, lone UTF-16
    surrogates (`"\\ud800"`: not text, so not storable or hashable) and excessive nesting.
    """
    try:
        document = json.loads(
            raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
        # Re-encoding is the one complete check for lone surrogates in keys and values alike.
        json.dumps(document, ensure_ascii=False).encode("utf-8")
        _check_depth(document)
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") from None
    return document


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

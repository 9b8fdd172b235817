"""Query-string and path parameters, parsed strictly: a bad one is a 400 naming it."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aiohttp import web

from httpkit.errors import ApiError
from store.pagination import DEFAULT_LIMIT, MAX_LIMIT

# Nine digits fit a Postgres integer (revisions, version numbers) whatever they are.
_NUMBER = re.compile(r"[0-9]{1,9}")
_TRUE, _FALSE = ("true", "1"), ("false", "0")


def decimal(raw: str) -> int | None:
    """A plain ASCII decimal of at most nine digits, else None.

    `str.isdigit` is not enough: it accepts `²` and other Unicode digits that `int` refuses.
    """
    return int(raw) if _NUMBER.fullmatch(raw) else None


def bad_query(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid_query", message, [{"path": name, "message": message}])


def required(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if not value:
        raise bad_query(name, f"{name} is required")
    return value


def limit(request: web.Request) -> int:
    """The page size: `limit`, default 50, at most 1000."""
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    value = decimal(raw)
    if value is None or not 1 <= value <= MAX_LIMIT:
        raise bad_query("limit", f"limit must be 1 to {MAX_LIMIT}")
    return value


def version_number(request: web.Request, name: str) -> int | None:
    """An optional version-number parameter (1 or more)."""
    raw = request.query.get(name)
    if raw is None:
        return None
    value = decimal(raw)
    if value is None or value < 1:
        raise bad_query(name, f"{name} must be a version number")
    return value


def timestamp(request: web.Request, name: str) -> datetime | None:
    """An optional ISO 8601 timestamp (`Z` or an offset; none means UTC)."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise bad_query(name, f"{name} must be an ISO 8601 timestamp (encode + as %2B)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def flag(request: web.Request, name: str) -> bool | None:
    """An optional boolean parameter: true/1 or false/0."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw.lower() not in _TRUE + _FALSE:
        raise bad_query(name, f"{name} must be true or false")
    return raw.lower() in _TRUE


def choice(request: web.Request, name: str, choices: tuple[str, ...], default: str | None) -> str:
    """One of `choices`; `default` when absent (None: required)."""
    raw = request.query.get(name)
    if raw is None and default is not None:
        return default
    if raw not in choices:
        raise bad_query(name, f"{name} must be one of: {', '.join(choices)}")
    return raw

"""Opaque list cursors: the sort key of the last item served, base64url-encoded JSON."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from store.errors import StoreError

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
# Cursor integers (row ids, version numbers) are compared in SQL as bigint: a larger one could
# not be sent to Postgres at all.
MAX_CURSOR_INT = 2**63 - 1


class InvalidCursor(StoreError):
    code = "invalid_cursor"


def encode_cursor(key: list[Any]) -> str:
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, types: tuple[type, ...]) -> list[Any] | None:
    """The sort key a cursor carries, or None for the first page; InvalidCursor if forged."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (binascii.Error, ValueError):
        raise InvalidCursor("cursor is not one this API issued") from None
    if (
        not isinstance(key, list)
        or len(key) != len(types)
        or not all(_fits(v, t) for v, t in zip(key, types, strict=True))
    ):
        raise InvalidCursor("cursor is not one this API issued")
    return key


def _fits(value: Any, expected: type) -> bool:
    """True when a cursor value has the expected type and can be sent to Postgres."""
    if isinstance(value, bool) or not isinstance(value, expected):
        return False
    if isinstance(value, str):
        return "\x00" not in value  # Postgres text cannot hold NUL
    if isinstance(value, int):
        return abs(value) <= MAX_CURSOR_INT
    return True


def cursor_time(value: str) -> datetime:
    """A timestamp carried in a cursor; InvalidCursor when it is not one."""
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidCursor("cursor is not one this API issued") from None


def page(items: list[T], limit: int, key: Callable[[T], list[Any]]) -> tuple[list[T], str | None]:
    """Cut one extra fetched row off into a next cursor."""
    if len(items) <= limit:
        return items, None
    kept = items[:limit]
    return kept, encode_cursor(key(kept[-1]))

"""JSON errors `{"error": {"code", "message", "details"}}` and the middleware that makes them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from store import errors
from store.db import DATABASE_UNAVAILABLE
from store.pagination import InvalidCursor
from store.tokens import InvalidRole

log = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Domain errors by the HTTP status they mean; the first matching class wins.
STATUS_OF: list[tuple[type[errors.StoreError], int]] = [
    (errors.NotFound, 404),
    (errors.InvalidConfig, 422),
    (errors.InvalidRouting, 422),
    (InvalidRole, 422),
    (errors.RevisionConflict, 412),
    (errors.Conflict, 409),
    (InvalidCursor, 400),
]


class ApiError(Exception):
    """An error with its HTTP status, raised by handlers for request-level problems."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_response(status: int, code: str, message: str, details: Any = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "details": details}}
    return web.json_response(body, status=status)


def _status_of(exc: errors.StoreError) -> int:
    for cls, status in STATUS_OF:
        if isinstance(exc, cls):
            return status
    return 400


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error; log unexpected ones once, with context. A failure
    after a streamed answer has begun (an export) is left to aiohttp, which breaks the
    connection: the client sees the body cut short, never an error appended to it."""
    try:
        return await handler(request)
    except Exception as exc:
        if request.writer.output_size > 0:
            raise
        return error_answer(request.method, request.path, exc)


def error_answer(method: str, path: str, failure: Exception) -> web.Response:
    """The JSON error for `failure`, raised serving `method` `path`."""
    try:
        raise failure
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)
    except errors.StoreError as exc:
        return error_response(_status_of(exc), exc.code, exc.message, exc.details)
    except asyncpg.IntegrityConstraintViolationError as exc:
        # A race the checks above the database could not see (e.g. a concurrent delete).
        return error_response(
            409,
            "conflict",
            "the change conflicts with the current state",
            {"constraint": getattr(exc, "constraint_name", None)},
        )
    except DATABASE_UNAVAILABLE as exc:
        # Postgres is out of reach and nothing cached could answer: a retry may succeed.
        log.warning("dependency_unavailable", path=path, error=type(exc).__name__)
        return error_response(503, "unavailable", "a dependency is unavailable; retry", None)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return error_response(exc.status, code, exc.reason, None)
    except Exception:
        log.exception("unhandled_error", method=method, path=path)
        return error_response(500, "internal_error", "internal error", None)

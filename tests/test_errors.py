"""The error middleware: every failure becomes a JSON error with the right status."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from httpkit.errors import error_middleware


def _raising(exc: BaseException) -> web.Application:
    async def handler(_request: web.Request) -> web.Response:
        raise exc

    app = web.Application(middlewares=[error_middleware])
    app.router.add_get("/", handler)
    return app


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (asyncpg.PostgresConnectionError("server closed the connection"), 503, "unavailable"),
        (ConnectionRefusedError(111, "refused"), 503, "unavailable"),
        (asyncpg.UniqueViolationError("duplicate key"), 409, "conflict"),
        (web.HTTPNotFound(), 404, "not_found"),
        (RuntimeError("secret internals"), 500, "internal_error"),
    ],
)
async def test_failures_become_json_errors(exc: BaseException, status: int, code: str) -> None:
    client: TestClient[Any, Any] = TestClient(TestServer(_raising(exc)))
    await client.start_server()
    try:
        resp = await client.get("/")
        body = await resp.json()
    finally:
        await client.close()
    assert resp.status == status
    assert body["error"]["code"] == code
    assert "secret internals" not in str(body)

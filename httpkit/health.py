"""Liveness and readiness, answered alike by both services."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Literal

from aiohttp import web

from httpkit.endpoint import endpoint
from httpkit.json import json_response
from httpkit.openapi import Shape

# Seconds a readiness probe waits for each dependency.
READY_TIMEOUT_S = 1.0


class Health(Shape):
    status: Literal["ok"]


class Readiness(Shape):
    status: Literal["ready", "degraded"]
    degraded: list[Literal["postgres", "redis"]]


@endpoint("Liveness: the process answers", responses={200: Health})
async def healthz(_request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readiness(checks: dict[str, Awaitable[object]]) -> web.Response:
    """200 when every check completes; 503 naming the dependencies whose check failed."""
    degraded = []
    for name, check in checks.items():
        try:
            await check
        # Whatever kept the dependency from answering (a ping has no data to get wrong).
        except Exception:
            degraded.append(name)
    if degraded:
        return json_response({"status": "degraded", "degraded": degraded}, status=503)
    return json_response({"status": "ready", "degraded": []})

"""The OpenAPI 3 document of the admin API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from httpkit.json import json_response

DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "agentver admin", "version": "1"},
    "paths": {},
}


async def serve(request: web.Request) -> web.Response:
    return json_response(DOCUMENT)

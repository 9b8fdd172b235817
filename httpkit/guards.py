"""Request guards that hold for every endpoint, before any handler runs."""

from __future__ import annotations

from aiohttp import web

from httpkit.errors import ApiError, Handler


@web.middleware
async def reject_nul_in_url(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a NUL (`%00`) anywhere in the path or query.

    Postgres text cannot hold NUL, so such a value could never name a stored row or match a
    filter; refusing it here keeps every handler from turning it into a database error.
    """
    parts = [request.path, *request.query.keys(), *request.query.values()]
    if any("\x00" in part for part in parts):
        raise ApiError(400, "malformed_url", "the URL contains a NUL character")
    return await handler(request)

"""The web console: plain ES modules and CSS served by the admin service itself.

No build step and no CDN: every asset the browser loads comes from here, and the console talks
to nothing but this service's JSON API with the token the user signs in with.
"""

from __future__ import annotations

import re
from pathlib import Path

from aiohttp import web

from httpkit.errors import ApiError

CONSOLE_DIR = Path(__file__).with_name("console")
CONSOLE_PATH = "/console/"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Flat names only: nothing outside CONSOLE_DIR can be named, whatever the URL says.
ASSET_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(?:html|js|css|svg)")
# The console runs no inline script, loads nothing from elsewhere and is never framed; the token
# it holds can therefore only be sent back to this origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Assets change with every deploy and are tiny: revalidate (ETag/Last-Modified) every time.
    "Cache-Control": "no-cache",
}


def _serve(name: str) -> web.FileResponse:
    path = CONSOLE_DIR / name
    if not ASSET_NAME.fullmatch(name) or not path.is_file():
        raise ApiError(404, "not_found", f"no console asset {name}")
    headers = {**SECURITY_HEADERS, "Content-Type": CONTENT_TYPES[path.suffix]}
    return web.FileResponse(path, headers=headers)


async def index(request: web.Request) -> web.FileResponse:
    """The console's single page; it routes on the URL fragment."""
    return _serve("index.html")


async def asset(request: web.Request) -> web.FileResponse:
    return _serve(request.match_info["name"])


async def to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(CONSOLE_PATH)


def routes() -> list[web.RouteDef]:
    """The console's URL map: `/` and `/console` lead to `/console/`."""
    return [
        web.get("/", to_console),
        web.get("/console", to_console),
        web.get(CONSOLE_PATH, index),
        web.get(CONSOLE_PATH + "{name}", asset),
    ]

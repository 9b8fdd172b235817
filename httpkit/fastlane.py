"""A fast lane in front of aiohttp for the routes on every call's path.

aiohttp spends more CPU on a webhook (parsing into a Request, dispatch through the router and
middleware, building and writing a Response) than the router's own work on it. A lane is an
async function from the request's target, headers and body to the answer's bytes. Each
connection starts in the lane: a request for a lane's route, plainly framed (HTTP/1.1, one
Content-Length, no transfer coding, no `Expect`), is parsed here in one pass and answered with
one write. Anything else (another route, an unusual framing, a malformed or oversized request)
hands the connection over, bytes received so far included, to aiohttp's own protocol, which
serves it from then on exactly as without the lane. A lane's route is still an aiohttp route
too: what the lane hands over is answered by the same code through `lane_view`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, NamedTuple, cast

import structlog
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from httpkit.auth import View
from httpkit.errors import error_answer

log = structlog.get_logger()

# Bytes of request head the lane parses; a longer head goes to aiohttp. aiohttp's limit for
# one line, so that the lane takes no head that aiohttp would refuse as too long. A provider's
# webhook head is well under 2 KB.
MAX_HEAD_BYTES = 8190
# Seconds an idle connection stays open: aiohttp's own default, so that a connection is kept
# as long whichever protocol serves it.
KEEPALIVE_S = 3630.0
# Headers whose presence means a framing the lane does not implement; aiohttp does.
UNUSUAL_HEADERS = ("transfer-encoding", "expect", "upgrade")


# Named tuples, not frozen dataclasses, which set each field through object.__setattr__: the
# lane builds three of these a request.
class LaneRequest(NamedTuple):
    """What a lane is given: the request target as sent (path and query, aiohttp's `raw_path`),
    the headers (looked up by lower-case name), the body, and the path's variables by name."""

    target: str
    headers: Mapping[str, str]
    body: bytes
    params: Mapping[str, str]


class LaneAnswer(NamedTuple):
    status: int
    content_type: str
    body: bytes


Lane = Callable[[web.Application, LaneRequest], Awaitable[LaneAnswer]]
# An app's lanes by (method, path); a path may hold one variable segment, as in aiohttp's
# `/v1/calls/{call_id}/config`.
LANES = web.AppKey("fast_lanes", dict[tuple[str, str], Lane])


class _Routes:
    """Which lane serves a request, and its path's variable."""

    def __init__(self, lanes: Mapping[tuple[str, str], Lane]) -> None:
        self._exact = {key: lane for key, lane in lanes.items() if "{" not in key[1]}
        self._templates = []
        for (method, path), lane in lanes.items():
            if "{" in path:
                prefix, _, rest = path.partition("{")
                name, _, suffix = rest.partition("}")
                assert "{" not in suffix, f"{path}: one variable a lane's path"
                self._templates.append((method, prefix, suffix, name, lane))

    def match(self, method: str, path: str) -> tuple[Lane, dict[str, str]] | None:
        lane = self._exact.get((method, path))
        if lane is not None:
            return lane, {}
        for lane_method, prefix, suffix, name, lane in self._templates:
            if method == lane_method and path.startswith(prefix) and path.endswith(suffix):
                value = path[len(prefix) : len(path) - len(suffix)]
                # An escaped or empty segment is aiohttp's to decode or refuse.
                if value and "/" not in value and "%" not in value:
                    return lane, {name: value}
        return None


def route(app: web.Application, method: str, path: str, lane: Lane, view: View) -> web.RouteDef:
    """`path`'s route, served by `lane` first and by `view` (`lane_view(lane)`, described as an
    endpoint) for what the lane hands over."""
    app.setdefault(LANES, {})[method, path] = lane
    return web.route(method, path, view)


def lane_view(lane: Lane) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The aiohttp handler for a lane's route: the requests the lane hands over."""

    @functools.wraps(lane)  # its name and doc
    async def view(request: web.Request) -> web.Response:
        body = await request.read()
        request_ = LaneRequest(request.raw_path, request.headers, body, request.match_info)
        answer = await lane(request.app, request_)
        return web.Response(
            status=answer.status, body=answer.body, headers={"Content-Type": answer.content_type}
        )

    return view


class _Date:
    """The Date header's value, formatted once a second."""

    def __init__(self) -> None:
        self._second, self._value = 0, ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True)
        return self._value


_date = _Date()


def _head(status: int, content_type: str, length: int, close: bool) -> bytes:
    connection = "Connection: close\r\n" if close else ""
    return (
        f"HTTP/1.1 {status} {_PHRASES[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\nDate: {_date()}\r\nServer: {SERVER_SOFTWARE}\r\n"
        f"{connection}\r\n"
    ).encode("latin-1")


_PHRASES = {status.value: status.phrase for status in HTTPStatus}


class _Parsed(NamedTuple):
    lane: Lane
    method: str
    request: LaneRequest
    keep_alive: bool
    end: int  # where the next request starts in the buffer


# What _parse says when the buffer holds no whole request yet.
_INCOMPLETE = object()


def _parse(buffer: bytes, routes: _Routes, max_body: int) -> _Parsed | object | None:
    """The request at the start of `buffer` if a lane serves it; _INCOMPLETE while its bytes are
    still arriving; None when aiohttp must serve it."""
    end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
    if end < 0:
        return _INCOMPLETE if len(buffer) < MAX_HEAD_BYTES + 4 else None
    head = buffer[:end].decode("latin-1")
    # A bare LF, which aiohttp's parser judges by its own rules.
    if head.count("\n") != head.count("\r\n"):
        return None
    request_line, *lines = head.split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1":
        return None
    method, target, _ = parts
    matched = routes.match(method, target.partition("?")[0])
    if matched is None:
        return None
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        # Folded lines, space before the colon and repeated names are aiohttp's to judge.
        if not colon or not name or name[0] in " \t" or name[-1] in " \t":
            return None
        name = name.lower()
        if name in headers:
            return None
        headers[name] = value.strip(" \t")
    # Without Content-Length (and transfer coding) a request has no body (RFC 9112, 6.3).
    length = headers.get("content-length", "0")
    unusual = not headers.keys().isdisjoint(UNUSUAL_HEADERS)
    if unusual or not (length.isascii() and length.isdigit()):
        return None
    size = int(length)
    if size > max_body:
        return None
    start = end + 4
    if len(buffer) < start + size:
        return _INCOMPLETE
    keep_alive = "close" not in headers.get("connection", "").lower()
    lane, params = matched
    request = LaneRequest(target, headers, buffer[start : start + size], params)
    return _Parsed(lane, method, request, keep_alive, start + size)


class _Connection(asyncio.Protocol):
    """One client connection while the lane serves it."""

    def __init__(self, server: FastLaneServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._serving: asyncio.Task[None] | None = None
        self._closing = False
        self._last_active = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._writing_paused = False
        self._reading_paused = False

    # --- asyncio.Protocol ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._server.lane_connections.add(self)
        self._last_active = self._server.loop.time()
        self._idle_timer = self._server.loop.call_later(KEEPALIVE_S, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._buffer = self._buffer + data if self._buffer else data
        self._last_active = self._server.loop.time()
        if self._serving is None and not self._writing_paused:
            self._next()
        elif len(self._buffer) > self._server.max_buffered:
            # A client pipelining requests faster than they are answered (or not reading the
            # answers) waits in its socket, not in this worker's memory.
            self._read(paused=True)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._serving is None:
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        # A request in flight runs on: the call it routes is recorded whether or not its
        # provider is still there to hear the answer (as aiohttp does by default).
        self._forget()

    # --- serving ---

    def _next(self) -> None:
        if self._closing:
            return
        if len(self._buffer) <= self._server.max_buffered:
            self._read(paused=False)
        parsed = _parse(self._buffer, self._server.routes, self._server.max_body)
        if parsed is _INCOMPLETE:
            return
        if not isinstance(parsed, _Parsed):
            self._hand_over()
            return
        self._buffer = self._buffer[parsed.end :]
        self._serving = task = self._server.loop.create_task(self._serve(parsed))
        self._server.lane_requests.add(task)
        task.add_done_callback(self._server.lane_requests.discard)

    async def _serve(self, parsed: _Parsed) -> None:
        try:
            answer = await parsed.lane(self._server.app, parsed.request)
        except Exception as exc:
            path = parsed.request.target.partition("?")[0]
            error = error_answer(parsed.method, path, exc)
            assert isinstance(error.body, bytes)
            answer = LaneAnswer(error.status, error.headers["Content-Type"], error.body)
        self._serving = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        close = self._closing or not parsed.keep_alive
        # One write, one send(2): the answer is a few hundred bytes.
        transport.write(
            _head(answer.status, answer.content_type, len(answer.body), close) + answer.body
        )
        # Idle from the answer on, as aiohttp counts its keep-alive.
        self._last_active = self._server.loop.time()
        if close:
            transport.close()
        elif self._buffer and not self._writing_paused:
            self._next()

    def _read(self, *, paused: bool) -> None:
        if paused != self._reading_paused and self._transport is not None:
            self._reading_paused = paused
            if paused:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def _hand_over(self) -> None:
        """From here on aiohttp serves the connection, from the first byte the lane has not
        answered."""
        transport = self._transport
        assert transport is not None
        self._read(paused=False)
        self._forget()
        handler = self._server.inner()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self._buffer:
            handler.data_received(self._buffer)
        self._buffer = b""

    def _check_idle(self) -> None:
        idle = self._server.loop.time() - self._last_active
        if self._serving is None and idle >= KEEPALIVE_S:
            self.close()
            return
        # A request in flight is not idleness, and its answer restarts the count.
        wait = KEEPALIVE_S if self._serving is not None else KEEPALIVE_S - idle
        self._idle_timer = self._server.loop.call_later(wait, self._check_idle)

    def _forget(self) -> None:
        self._server.lane_connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    # --- shutdown ---

    def close(self) -> None:
        """Close now if idle, else once the request in flight is answered."""
        self._closing = True
        if self._serving is None and self._transport is not None:
            self._transport.close()


class FastLaneServer(Server):
    """aiohttp's server behind an app's lanes: connections start in the lane and are handed to
    aiohttp (`inner`, as the app configured it) at their first request that is not a lane's.
    Shutting down closes and drains both kinds, as aiohttp's own server does its own."""

    def __init__(
        self, inner: Server, app: web.Application, lanes: Mapping[tuple[str, str], Lane]
    ) -> None:
        super().__init__(inner.request_handler, request_factory=inner.request_factory)
        self.app, self.routes, self.inner = app, _Routes(lanes), inner
        self.loop = asyncio.get_running_loop()
        # The app's own body limit: a larger body goes to aiohttp, which answers 413.
        self.max_body: int = app._client_max_size
        # Bytes a connection buffers beyond the request being answered: one more whole request.
        self.max_buffered = MAX_HEAD_BYTES + 4 + self.max_body
        self.lane_connections: set[_Connection] = set()
        # Requests in flight, their connections open or not: shutdown waits for them all.
        self.lane_requests: set[asyncio.Task[None]] = set()

    # The lane's protocol, not aiohttp's: asyncio needs only a Protocol from the factory.
    def __call__(self) -> Any:
        return _Connection(self)

    @property
    def connections(self) -> list[RequestHandler]:
        return self.inner.connections

    def pre_shutdown(self) -> None:
        self.inner.pre_shutdown()
        for connection in list(self.lane_connections):
            connection.close()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp's)
        """Let requests in flight finish (within `timeout`), then close what is left."""
        if self.lane_requests:
            _, late = await asyncio.wait(self.lane_requests, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                log.warning("lane_requests_cancelled", count=len(late))
        for connection in list(self.lane_connections):
            connection.close()
        await self.inner.shutdown(timeout)

"""The fast lane (httpkit/fastlane.py) over real sockets: what it answers itself, what it hands to
aiohttp (and that aiohttp then serves the connection as it would alone), errors, and shutdown."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from httpkit import fastlane
from httpkit.errors import ApiError, error_middleware
from httpkit.fastlane import MAX_HEAD_BYTES, LaneAnswer, LaneRequest, lane_view
from httpkit.serve import FastLaneRunner

MAX_BODY = 1024
HOST = "127.0.0.1"


async def echo(app: web.Application, request: LaneRequest) -> LaneAnswer:
    """The body back, with the target and a header, so a test sees what the lane parsed."""
    seen = f"{request.target}|{request.headers.get('x-probe', '')}|".encode()
    return LaneAnswer(200, "text/plain; charset=utf-8", seen + request.body)


async def fail(app: web.Application, request: LaneRequest) -> LaneAnswer:
    raise RuntimeError("a bug")


async def refuse(app: web.Application, request: LaneRequest) -> LaneAnswer:
    raise ApiError(403, "forbidden", "not you")


RELEASE = web.AppKey("release", asyncio.Event)
RELEASED = web.AppKey("released", list[str])


async def slow(app: web.Application, request: LaneRequest) -> LaneAnswer:
    await app[RELEASE].wait()
    app[RELEASED].append(request.target)
    return LaneAnswer(200, "text/plain", b"released")


async def item(app: web.Application, request: LaneRequest) -> LaneAnswer:
    return LaneAnswer(200, "text/plain", f"item {request.params['item']}".encode())


async def plain(request: web.Request) -> web.Response:
    return web.Response(text="aiohttp")


@pytest.fixture
async def served() -> AsyncIterator[tuple[int, FastLaneRunner]]:
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY)
    app[RELEASE] = asyncio.Event()
    app[RELEASED] = []
    routes = [
        fastlane.route(app, "POST", f"/{lane.__name__}", lane, lane_view(lane))
        for lane in (echo, fail, refuse, slow)
    ]
    item_route = fastlane.route(app, "GET", "/items/{item}", item, lane_view(item))
    app.router.add_routes([*routes, item_route, web.get("/plain", plain)])
    runner = FastLaneRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    sock = socket.socket()
    sock.bind((HOST, 0))
    site = web.SockSite(runner, sock)
    await site.start()
    yield sock.getsockname()[1], runner
    app[RELEASE].set()
    if runner.server is not None:  # the shutdown test cleans up itself
        await runner.cleanup()


def post(path: str, body: bytes = b"", *extra: str) -> bytes:
    headers = "".join(f"{line}\r\n" for line in extra)
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nX-Probe: p\r\nContent-Length: {len(body)}\r\n"
        f"{headers}\r\n"
    ).encode() + body


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        """The next final answer (1xx skipped): status, headers (lower-case names), body."""
        head = (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)).decode()
        if head.startswith("HTTP/1.1 1"):
            return await self.answer()
        status_line, *lines = head[:-4].split("\r\n")
        headers = {k.lower(): v for k, _, v in (line.partition(": ") for line in lines)}
        length = int(headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), 5)
        return int(status_line.split(" ")[1]), headers, body

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5) == b""


@pytest.fixture
async def client(served: tuple[int, FastLaneRunner]) -> AsyncIterator[Client]:
    reader, writer = await asyncio.open_connection(HOST, served[0])
    yield Client(reader, writer)
    writer.close()


async def test_a_lane_answers_requests_on_a_kept_alive_connection(client: Client) -> None:
    for body in (b"one", b"two"):
        await client.send(post("/echo?q=1", body))
        status, headers, answer = await client.answer()
        assert (status, answer) == (200, b"/echo?q=1|p|" + body)
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert headers["date"].endswith(" GMT")
        assert "connection" not in headers


async def test_a_client_pipelining_faster_than_it_reads_is_answered_in_full(
    client: Client,
) -> None:
    """Reading pauses while a connection's buffer holds more than one request beyond the one
    being answered, and writing back-pressure holds the next answers: none are lost."""
    bodies = [b"%d:" % i + b"x" * 1000 for i in range(12_000)]  # 12 MB of answers
    sender = asyncio.create_task(client.send(b"".join(post("/echo", body) for body in bodies)))
    await asyncio.sleep(0.5)  # the client reads nothing yet: the sockets' buffers fill
    answers = [(await client.answer())[2] for _ in bodies]
    await sender
    assert answers == [b"/echo|p|" + body for body in bodies]


async def test_requests_arriving_a_byte_at_a_time_are_answered(client: Client) -> None:
    for byte in post("/echo", b"abc"):
        await client.send(bytes([byte]))
    assert (await client.answer())[2] == b"/echo|p|abc"


async def test_pipelined_requests_are_answered_in_order_across_the_hand_over(
    client: Client,
) -> None:
    plain_request = b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n"
    await client.send(
        post("/echo", b"1") + post("/echo", b"2") + plain_request + post("/echo", b"3")
    )
    bodies = [(await client.answer())[2] for _ in range(4)]
    # The fourth is aiohttp's too: after a hand-over the connection stays with it.
    assert bodies == [b"/echo|p|1", b"/echo|p|2", b"aiohttp", b"/echo|p|3"]


async def test_a_lane_with_a_path_variable_and_aiohttp_read_it_alike(client: Client) -> None:
    answers = []
    for path in ("/items/abc", "/items/a%20b", "/items/", "/items/a/b"):
        await client.send(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        status, _, body = await client.answer()
        answers.append((status, body if status == 200 else json.loads(body)["error"]["code"]))
    # The escaped one went to aiohttp, which decodes it; aiohttp has no route for the others.
    assert answers == [
        (200, b"item abc"),
        (200, b"item a b"),
        (404, "not_found"),
        (404, "not_found"),
    ]


@pytest.mark.parametrize(
    "framing",
    [
        pytest.param(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Probe: p\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n\r\n",
            id="chunked",
        ),
        pytest.param(post("/echo", b"abc", "Expect: 100-continue"), id="expect"),
        pytest.param(post("/echo", b"abc").replace(b"HTTP/1.1", b"HTTP/1.0"), id="http-1.0"),
        # The lane's own: names in any case, spaces around values.
        pytest.param(post("/echo", b"abc").replace(b"X-Probe: p", b"x-PROBE:  p "), id="odd-case"),
    ],
)
async def test_the_lane_and_aiohttp_answer_every_framing_alike(
    client: Client, framing: bytes
) -> None:
    await client.send(framing)
    status, _, body = await client.answer()
    assert (status, body) == (200, b"/echo|p|abc")


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param(post("/echo", b"abc", "Content-Length: 3"), id="repeated-length"),
        pytest.param(
            post("/echo", b"abc").replace(b"Content-Length: 3", b"Content-Length: +3"),
            id="signed-length",
        ),
        pytest.param(
            post("/echo", b"abc").replace(b"Content-Length: 3", b"Content-Length: \xd9\xa3"),
            id="arabic-digit",
        ),
        pytest.param(
            post("/echo", b"abc").replace(b"X-Probe: p\r\n", b"X-Probe: p\n"), id="bare-lf"
        ),
        pytest.param(
            post("/echo", b"abc").replace(b"X-Probe: p", b"X-Probe : p"), id="space-before-colon"
        ),
        pytest.param(
            post("/echo", b"abc").replace(b"X-Probe: p\r\n", b"X-Probe: p\r\n folded\r\n"),
            id="folded",
        ),
        pytest.param(b"POST /echo  HTTP/1.1\r\nContent-Length: 0\r\n\r\n", id="two-spaces"),
        pytest.param(b"\x00\xff garbage\r\n\r\n", id="garbage"),
    ],
)
async def test_malformed_requests_are_left_to_aiohttp_which_refuses_them(
    served: tuple[int, FastLaneRunner], client: Client, hostile: bytes
) -> None:
    await client.send(hostile)
    status, _, _ = await client.answer()
    assert status == 400
    # The server is unharmed: a new connection is served by the lane.
    reader, writer = await asyncio.open_connection(HOST, served[0])
    fresh = Client(reader, writer)
    await fresh.send(post("/echo", b"ok"))
    try:
        assert (await fresh.answer())[2] == b"/echo|p|ok"
    finally:
        writer.close()


async def test_a_body_over_the_apps_limit_gets_aiohttps_413(client: Client) -> None:
    await client.send(post("/echo", b"x" * (MAX_BODY + 1)))
    assert (await client.answer())[0] == 413


async def test_a_head_too_long_for_the_lane_goes_to_aiohttp(client: Client) -> None:
    await client.send(post("/echo", b"abc", f"X-Long: {'a' * (MAX_HEAD_BYTES + 10)}"))
    # aiohttp's own limit is 8,190 bytes a line: past it, "400 Got more than 8190 bytes".
    assert (await client.answer())[0] == 400


async def test_failures_in_a_lane_are_json_errors_as_the_middleware_writes_them(
    client: Client,
) -> None:
    await client.send(post("/fail") + post("/refuse") + post("/echo", b"after"))
    failed, refused, after = [await client.answer() for _ in range(3)]
    assert failed[0] == 500
    assert failed[1]["content-type"] == "application/json; charset=utf-8"
    assert json.loads(failed[2]) == {
        "error": {"code": "internal_error", "message": "internal error", "details": None}
    }
    assert (refused[0], json.loads(refused[2])["error"]["code"]) == (403, "forbidden")
    assert after[2] == b"/echo|p|after"


async def test_connection_close_is_honoured(client: Client) -> None:
    await client.send(post("/echo", b"bye", "Connection: close"))
    status, headers, _ = await client.answer()
    assert (status, headers["connection"]) == (200, "close")
    assert await client.closed()


async def test_shutdown_finishes_requests_in_flight_and_closes_idle_connections(
    served: tuple[int, FastLaneRunner],
) -> None:
    port, runner = served
    busy = Client(*await asyncio.open_connection(HOST, port))
    idle = Client(*await asyncio.open_connection(HOST, port))
    await idle.send(post("/echo", b"x"))
    await idle.answer()
    await busy.send(post("/slow"))
    await asyncio.sleep(0.1)  # the slow request is in flight
    cleanup = asyncio.create_task(runner.cleanup())
    assert await idle.closed()
    assert not cleanup.done()
    app: Any = runner.app
    app[RELEASE].set()
    status, headers, body = await busy.answer()
    assert (status, body, headers["connection"]) == (200, b"released", "close")
    assert await busy.closed()
    await asyncio.wait_for(cleanup, 5)
    for client in (busy, idle):
        client.writer.close()


async def test_shutdown_waits_for_a_request_whose_client_hung_up(
    served: tuple[int, FastLaneRunner],
) -> None:
    """A provider that hung up mid-request: its call is still routed and recorded before the
    worker stops."""
    port, runner = served
    gone = Client(*await asyncio.open_connection(HOST, port))
    await gone.send(post("/slow?gone"))
    await asyncio.sleep(0.1)
    gone.writer.close()
    await asyncio.sleep(0.1)
    cleanup = asyncio.create_task(runner.cleanup())
    await asyncio.sleep(0.3)
    assert not cleanup.done()
    app: Any = runner.app
    app[RELEASE].set()
    await asyncio.wait_for(cleanup, 5)
    assert app[RELEASED] == ["/slow?gone"]


async def test_an_idle_connection_closes_after_the_keep_alive_counted_from_its_answer(
    served: tuple[int, FastLaneRunner], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastlane, "KEEPALIVE_S", 0.3)
    port, runner = served
    idle = Client(*await asyncio.open_connection(HOST, port))
    slow_one = Client(*await asyncio.open_connection(HOST, port))
    await slow_one.send(post("/slow"))
    await asyncio.sleep(0.6)  # past the keep-alive with the request in flight: still open
    app: Any = runner.app
    app[RELEASE].set()
    answered = asyncio.get_running_loop().time()
    assert (await slow_one.answer())[2] == b"released"
    assert await idle.closed()
    assert await slow_one.closed()
    # Counted from the answer, not from the request's bytes 0.6 s before it.
    assert asyncio.get_running_loop().time() - answered >= 0.25
    for client in (idle, slow_one):
        client.writer.close()

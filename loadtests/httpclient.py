"""A minimal HTTP/1.1 keep-alive client for load generation.

Requests are pre-built bytes and responses are parsed only as far as the status, the
Content-Length and the body, so the generator spends a few microseconds per request and leaves
the CPU to the server it measures. It speaks to our own servers only (aiohttp always sends a
Content-Length for these answers; chunked bodies are refused).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import cast

HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = b"\r\ncontent-length:"
# Bytes. Our answers are a few KB; anything bigger than this is a broken stream.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class ProtocolError(Exception):
    """The server sent something this client does not parse (or closed the connection)."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    # time.perf_counter() when its last byte was read: its latency ends there, not when the
    # generator's task next runs, a few callbacks later on a busy loop.
    at: float


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._closed: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = exc or ProtocolError("connection closed")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._closed)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        head_end = self._buffer.find(HEADER_END)
        if head_end < 0:
            return
        head = bytes(self._buffer[:head_end]).lower()
        at = head.find(CONTENT_LENGTH)
        if at < 0:
            waiter.set_exception(ProtocolError("response without Content-Length"))
            return
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + len(CONTENT_LENGTH) : line_end if line_end > 0 else None])
        total = head_end + 4 + length
        if length > MAX_RESPONSE_BYTES:
            waiter.set_exception(ProtocolError("response too large"))
            return
        if len(self._buffer) < total:
            return
        body = bytes(self._buffer[head_end + 4 : total])
        del self._buffer[:total]
        waiter.set_result(Response(int(head[9:12]), body, time.perf_counter()))

    def send(self, request: bytes) -> asyncio.Future[Response]:
        if self._closed is not None or self.transport is None:
            raise self._closed or ProtocolError("not connected")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._waiter


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(_Protocol, host, port)
        return cls(protocol)

    def request(self, raw: bytes) -> asyncio.Future[Response]:
        """Send `raw` now, not when a task wrapping it first runs; the future gets the answer."""
        return self._protocol.send(raw)

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()


def build_request(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    """The raw bytes of one keep-alive HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

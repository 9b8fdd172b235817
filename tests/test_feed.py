"""The change feed as a supervisor: no failure to connect ends it."""

from __future__ import annotations

import asyncio

from harness.net import HOST
from store.feed import Change, ChangeFeed
from tests.polling import eventually

# What a server mid-restart may answer asyncpg's startup: an authentication request asyncpg does
# not support (it raises its client-side InterfaceError, outside PostgresError and OSError).
UNSUPPORTED_AUTH = b"R" + (8).to_bytes(4, "big") + (99).to_bytes(4, "big")


class Handler:
    async def changed(self, change: Change) -> None:
        raise AssertionError("no session, no change")

    def lost(self) -> None:
        raise AssertionError("no session was ever up")

    async def resync(self) -> None:
        raise AssertionError("no session was ever up")


async def test_a_connect_failing_with_any_error_class_is_retried() -> None:
    attempts = 0

    async def odd_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        attempts += 1
        await reader.read(1024)  # the startup message
        writer.write(UNSUPPORTED_AUTH)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(odd_server, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    feed = ChangeFeed(f"postgresql://feed@{HOST}:{port}/feed?sslmode=disable", Handler())
    task = asyncio.create_task(feed.run())
    try:
        await eventually(lambda: asyncio.sleep(0, attempts), lambda n: n >= 2)
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.close()

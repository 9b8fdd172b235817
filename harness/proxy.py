"""A TCP proxy on a loopback port that a fault test can partition: while partitioned it accepts
and holds connections but moves no byte either way and closes nothing, as a network that drops
packets does (a refused connection is the easy case; a silent one is what production has).
Healed, the held bytes flow again, as TCP's retransmissions would deliver them.

It runs its own event loop in a thread, so a test that blocks its own loop (starting a server,
say) does not stall the traffic it proxies.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

from harness.net import HOST, free_port

CHUNK_BYTES = 64 * 1024
# Seconds to wait for the proxy's thread to start listening, or to stop.
THREAD_TIMEOUT_S = 5.0


class TcpProxy:
    """Forwards `HOST:port` to `HOST:target_port` until `partition()`, again after `heal()`."""

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(THREAD_TIMEOUT_S)
        self._loop.close()

    def through(self, url: str) -> str:
        """`url` (a server's, e.g. a DATABASE_URL or REDIS_URL) pointed at this proxy instead."""
        parts = urlsplit(url)
        user = parts.netloc.rpartition("@")[0]
        return parts._replace(netloc=f"{user}@" * bool(user) + f"{HOST}:{self.port}").geturl()

    def partition(self) -> None:
        """From now on no byte moves, and no connection is opened or closed, until `heal()`."""
        self._call(self._set_open(False))

    def heal(self) -> None:
        self._call(self._set_open(True))

    def _call(self, coroutine: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(THREAD_TIMEOUT_S)

    async def _set_open(self, is_open: bool) -> None:
        if is_open:
            self._open.set()
        else:
            self._open.clear()

    async def _listen(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._accepted, HOST, self.port)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accepted(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        server_w: asyncio.StreamWriter | None = None
        try:
            await self._open.wait()
            server_r, server_w = await asyncio.open_connection(HOST, self.target_port)
            pumps = [
                asyncio.create_task(self._pump(client_r, server_w)),
                asyncio.create_task(self._pump(server_r, client_w)),
            ]
            try:
                # Whichever side closes first closes both, as the far end would see it go.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            pass  # the server refused: so does the proxy, by closing
        finally:
            self._connections.discard(task)
            for writer in (client_w, server_w):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy bytes one way; while partitioned, neither read (the sender's kernel buffers and
        then its writes stall) nor write (what was read waits)."""
        with contextlib.suppress(ConnectionError):
            while True:
                await self._open.wait()
                data = await reader.read(CHUNK_BYTES)
                if not data:
                    return
                await self._open.wait()
                writer.write(data)
                await writer.drain()

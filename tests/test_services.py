"""The embedded servers `python -m harness services` falls back on: they start, serve real clients,
and leave no process behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from redis import Redis

from harness.services import embedded_postgres, embedded_redis


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A scratch `.data`; world-searchable because, as root, Postgres runs as `nobody`."""
    with tempfile.TemporaryDirectory(prefix="agentver-services-") as path:
        os.chmod(path, 0o755)  # noqa: S103 (directories need o+x to be searched)
        yield Path(path)


async def select_one_and_server_pids(url: str) -> tuple[int, set[int]]:
    """`SELECT 1` over a real connection, and the pids of every process of that server."""
    conn = await asyncpg.connect(url)
    try:
        one = await conn.fetchval("SELECT 1")
        pids = {row["pid"] for row in await conn.fetch("SELECT pid FROM pg_stat_activity")}
        return one, pids
    finally:
        await conn.close()


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_embedded_servers_serve_then_leave_nothing_running(data_dir: Path) -> None:
    with (
        embedded_postgres(data_dir / "postgres") as pg,
        embedded_redis(data_dir / "redis") as redis,
    ):
        assert pg.process is not None and redis.process is not None
        assert pg.url.endswith("/agentver")
        one, backend_pids = asyncio.run(select_one_and_server_pids(pg.url))
        assert one == 1
        with Redis.from_url(redis.url) as client:
            assert client.ping() is True
        pids = {pg.process.pid, redis.process.pid, *backend_pids}

    assert pg.process.returncode is not None and redis.process.returncode is not None
    assert [pid for pid in pids if is_running(pid)] == []


def test_the_command_runs_with_the_configured_servers_and_its_status_is_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.example/agentver")
    monkeypatch.setenv("REDIS_URL", "redis://cache.example/0")
    echo = "import os, sys; print(os.environ['DATABASE_URL'], os.environ['REDIS_URL']); sys.exit(3)"
    run = subprocess.run(  # noqa: S603 (fixed arguments)
        [sys.executable, "-m", "harness", "services", "--", sys.executable, "-c", echo],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (run.returncode, run.stdout) == (
        3,
        "postgresql://db.example/agentver redis://cache.example/0\n",
    )
    assert "postgres real (DATABASE_URL), redis real (REDIS_URL)" in run.stderr

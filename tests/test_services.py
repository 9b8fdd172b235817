"""The embedded servers `python -m harness services` falls back on: they start, serve real clients,
and leave no process behind."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from redis import Redis

from harness.postgres import reachable_place
from harness.processes import package_file
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


EMBEDDED_IN_A_PRIVATE_CHECKOUT = """
import asyncio, sys
from pathlib import Path
import asyncpg
from harness.postgres import _installation
from harness.services import embedded_postgres

async def select_one(url):
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT 1")
    finally:
        await conn.close()

with embedded_postgres(Path(".data/postgres")) as pg:
    print(asyncio.run(select_one(pg.url)), _installation(), sep="\\n")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs Postgres as another account")
def test_as_root_the_embedded_postgres_starts_in_a_checkout_only_root_can_enter(
    tmp_path: Path,
) -> None:
    """A checkout, and the wheel's Postgres with it (as in a venv inside the checkout), in a
    0700 directory: `nobody` can enter neither, yet the server starts and serves."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    checkout, site = private / "agentver", private / "site"
    ls_files = ["git", "ls-files", "-z"]
    listed = subprocess.run(ls_files, capture_output=True, check=True)  # noqa: S603
    for name in filter(None, listed.stdout.decode().split("\0")):
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(name, checkout / name)
    installed = package_file("embedded_postgres")
    for package in (installed, installed.with_name("embedded_postgres.libs")):
        shutil.copytree(package, site / package.name, symlinks=True)
    places = [
        reachable_place(checkout / ".data", "data"),
        reachable_place(site / "embedded_postgres" / "pginstall", "pginstall"),
    ]
    try:
        run = subprocess.run(  # noqa: S603 (fixed arguments)
            [sys.executable, "-c", EMBEDDED_IN_A_PRIVATE_CHECKOUT],
            cwd=checkout,
            env={**os.environ, "PYTHONPATH": f"{checkout}:{site}"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 0, run.stderr
        pginstall = places[1] / "embedded_postgres" / "pginstall"
        assert run.stdout.splitlines() == ["1", str(pginstall)]
        assert (places[0] / "postgres" / "PG_VERSION").exists()
    finally:
        for place in places:
            shutil.rmtree(place, ignore_errors=True)

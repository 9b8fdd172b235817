"""Serving an aiohttp app from the command line, as both services do: a listening port that is
never shared by accident, then one worker in this process or N pre-forked workers under a
supervisor that restarts a crashed one and drains them all on SIGTERM (docs/design.md, section 2).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_server import Server

from httpkit import metrics_fanin
from httpkit.fastlane import LANES, FastLaneServer

log = structlog.get_logger()

# A supervisor hands each worker its listening socket under this descriptor number.
LISTEN_FD_VAR = "AGENTVER_LISTEN_FD"
# Exit status when the port is taken: distinct from a crash, so scripts can tell them apart.
EXIT_ADDRESS_IN_USE = 98  # EADDRINUSE on Linux
# Seconds between no longer accepting and closing connections that carry no request yet: a
# connection accepted just before the listener closed has its request on the way, and closing
# it as idle would drop a call. Loopback and LAN requests arrive well within this; aiohttp's
# shutdown, which follows, drops request bytes that arrive later.
ACCEPT_GRACE_S = 0.5
# Seconds a worker started by a supervisor waits between two checks that its supervisor lives.
ORPHAN_CHECK_S = 1.0
# Seconds a supervisor gives its workers to drain on SIGTERM before killing them: more than a
# worker's own bounded shutdown (the router's: in-flight webhooks, spool replay, Telnyx commands).
DRAIN_TIMEOUT_S = 60.0
# Restarting a crashed worker: at once if it had served this long (seconds), else after a delay
# doubling from RESTART_DELAY_S up to MAX_RESTART_DELAY_S, so a worker that cannot start (its
# Postgres is down) is retried without spinning.
STABLE_S = 30.0
RESTART_DELAY_S = 0.5
MAX_RESTART_DELAY_S = 10.0


class AddressInUse(Exception):
    """The port is held by a server that this one was not asked to share it with."""


@dataclass(frozen=True)
class ServeOptions:
    """Where and how to listen: the command line's --host, --port, --workers, --rolling-restart."""

    host: str
    port: int
    workers: int
    rolling_restart: bool


def add_serve_arguments(
    parser: argparse.ArgumentParser, host: str, port: int, port_variable: str, workers: int
) -> None:
    """--host, --port, --workers and --rolling-restart, defaulting to the given values."""
    parser.add_argument(
        "--host", default=host, help=f"address to listen on (AGENTVER_HOST; default {host})"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=port,
        help=f"port to listen on ({port_variable}; default {port})",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=workers,
        help=f"worker processes sharing the port under one supervisor (default {workers}); "
        "1 serves in this process",
    )
    parser.add_argument(
        "--rolling-restart",
        action="store_true",
        help="share the port with the server already on it (start the new one, then SIGTERM the "
        "old one); without it a port in use is an error",
    )


def serve_options(args: argparse.Namespace) -> ServeOptions:
    return ServeOptions(args.host, args.port, args.workers, args.rolling_restart)


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError("must be from 1 to 65535")
    return value


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def cpu_count() -> int:
    """The CPUs this process may run on (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0))


@dataclass
class Claim:
    """A port taken for one server: its sockets, bound, listening once a worker serves them,
    and (unless it was shared on request) the lock that says an agentver server owns the port."""

    sockets: list[socket.socket]
    lock: socket.socket | None


def claim(host: str, port: int, count: int, *, share: bool) -> Claim:
    """`count` sockets bound to one port in one SO_REUSEPORT group (the kernel spreads
    connections over those listening). Unless `share`, AddressInUse when any other socket holds
    the port: SO_REUSEPORT would otherwise let an unrelated server of the same user join it.

    The sockets listen only when their worker serves (`serve_app`): a worker still starting, a
    new one in a rolling restart above all, is given no connections to keep waiting. Until one
    listens, a bound socket does not stop another server's check (Linux lets a socket with
    SO_REUSEADDR bind beside one that is not listening), so the lock does: an abstract Unix
    socket named after the port, held for the server's life, per network namespace like the
    port itself and released by the kernel whenever its holder exits.
    """
    lock = None
    if not share:
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lock.bind(f"\0agentver-port-{port}")
            _check_free(host, port)
        except OSError as exc:
            lock.close()
            raise _in_use(exc, host, port) from None
    return Claim([bind(host, port) for _ in range(count)], lock)


def _address(host: str, port: int) -> tuple[socket.AddressFamily, Any]:
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return family, address


def _in_use(exc: OSError, host: str, port: int) -> Exception:
    if exc.errno == errno.EADDRINUSE:
        return AddressInUse(f"{host}:{port}: address in use")
    return exc


def _check_free(host: str, port: int) -> None:
    """Bind without SO_REUSEPORT, which fails while any listener holds the port (including one
    on a wildcard address covering `host`); SO_REUSEADDR only passes over closed connections."""
    family, address = _address(host, port)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise _in_use(exc, host, port) from None


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to the port in its SO_REUSEPORT group, not yet listening."""
    family, address = _address(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise _in_use(exc, host, port) from None
    return sock


def run(
    module: str,
    create_app: Callable[[], web.Application],
    options: ServeOptions,
    *,
    shutdown_timeout_s: float,
    run_loop: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run,
) -> int:
    """Serve `python -m module` as `options` say; its exit status.

    A supervisor's worker (started with LISTEN_FD_VAR set) serves the socket it was handed, and
    its /metrics answers for all of the supervisor's workers (httpkit/metrics_fanin.py).
    Otherwise the app is built first, so a configuration error ends the command before any port
    is taken; then the port is taken and served here, or by `options.workers` workers.
    """
    inherited = os.environ.get(LISTEN_FD_VAR)
    if inherited is not None:
        sock = socket.socket(fileno=int(inherited))
        worker_app = create_app()
        metrics_fanin.join(worker_app, metrics_fanin.Workers.from_env(os.environ))
        run_loop(serve_app(worker_app, sock, shutdown_timeout_s, parent=os.getppid()))
        return 0
    app = create_app()
    try:
        taken = claim(options.host, options.port, options.workers, share=options.rolling_restart)
    except AddressInUse as exc:
        print(
            f"python -m {module}: cannot listen on {exc}; another server holds the port"
            " (stop it, choose another --port, or pass --rolling-restart to share it)",
            file=sys.stderr,
        )
        return EXIT_ADDRESS_IN_USE
    if options.workers == 1:
        run_loop(serve_app(app, taken.sockets[0], shutdown_timeout_s))
        return 0
    command = [sys.executable, "-m", module]
    return Supervisor(command, taken.sockets, lambda: bind(options.host, options.port)).run()


class FastLaneRunner(web.AppRunner):
    """An AppRunner whose sites serve the app's lanes (httpkit/fastlane.py) first, when it has
    any. Here, not beside the lanes: aiohttp's runner has __slots__, and a module compiled with
    mypyc (scripts/compile) cannot subclass it."""

    async def _make_server(self) -> Server:
        inner = await super()._make_server()
        lanes = self.app.get(LANES)
        return FastLaneServer(inner, self.app, lanes) if lanes else inner


async def serve_app(
    app: web.Application, sock: socket.socket, shutdown_timeout_s: float, parent: int | None = None
) -> None:
    """Serve on `sock` until SIGTERM or SIGINT (or, with `parent`, until that supervisor is
    gone), then stop without dropping a request.

    On a signal: stop accepting (new connections go to the sockets still open on the port), give
    just-accepted connections ACCEPT_GRACE_S to deliver their request, let requests in flight
    finish (at most `shutdown_timeout_s`), then close the app's resources.
    """
    runner = FastLaneRunner(app, handle_signals=False, shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    site = web.SockSite(runner, sock)
    await site.start()  # listens: connections come only now that the app is ready
    log.info("serving", pid=os.getpid(), address=site.name)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    watch = asyncio.create_task(_watch_parent(parent, stopping)) if parent else None
    try:
        await stopping.wait()
        await site.stop()
        await asyncio.sleep(ACCEPT_GRACE_S)
    finally:
        if watch is not None:
            watch.cancel()
        await runner.cleanup()


async def _watch_parent(parent: int, stopping: asyncio.Event) -> None:
    """Stop when the supervisor that started us is gone (killed: it could not drain us)."""
    while True:
        await asyncio.sleep(ORPHAN_CHECK_S)
        if os.getppid() != parent:
            break
    log.warning("supervisor_gone", supervisor_pid=parent)
    stopping.set()


@dataclass
class _Worker:
    sock: socket.socket | None
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restart_delay_s: float = 0.0


class Supervisor:
    """Runs one worker per socket (`command` with LISTEN_FD_VAR naming it), restarts a worker
    that exits, and on SIGTERM or SIGINT drains them all.

    A worker that exits takes its socket with it: the supervisor closes its own copy, so the
    kernel sends new connections to the sockets still served (connections it had queued on the
    dead one are reset, or handed to the others with `net.ipv4.tcp_migrate_req=1`), and its
    replacement gets a fresh socket from `bind`, which listens once that worker serves.
    Workers run in sessions of their own: a Ctrl-C reaches them once, through the supervisor.
    Each is told its slot and a directory of the supervisor's own (mode 0700, removed at exit)
    where the workers exchange their metrics (httpkit/metrics_fanin.py).
    """

    def __init__(
        self, command: list[str], sockets: list[socket.socket], bind: Callable[[], socket.socket]
    ) -> None:
        self._command = command
        self._bind = bind
        self._workers = [_Worker(sock) for sock in sockets]

    def run(self) -> int:
        """Supervise until SIGTERM or SIGINT; 0 once every worker has drained and exited 0."""
        with tempfile.TemporaryDirectory(prefix="agentver-workers-") as runtime:
            return self._supervise(Path(runtime))

    def _supervise(self, runtime: Path) -> int:
        wakeup_r, wakeup_w = os.pipe()
        os.set_blocking(wakeup_w, False)
        signal.set_wakeup_fd(wakeup_w)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            # A Python-level handler makes the signal wake the select below.
            signal.signal(signum, _ignore)
        log.info("supervisor_started", pid=os.getpid(), workers=len(self._workers))
        for worker in self._workers:
            self._start(worker, runtime)
        try:
            while not self._wait_for_signals(wakeup_r):
                self._reap()
                for worker in self._workers:
                    if worker.restart_at is not None and worker.restart_at <= time.monotonic():
                        self._start(worker, runtime)
        finally:
            signal.set_wakeup_fd(-1)
            os.close(wakeup_r)
            os.close(wakeup_w)
        return self._drain()

    def _wait_for_signals(self, wakeup_r: int) -> bool:
        """Sleep until a signal or the next restart is due; whether SIGTERM or SIGINT came."""
        due = [w.restart_at for w in self._workers if w.restart_at is not None]
        timeout = max(0.0, min(due) - time.monotonic()) if due else None
        readable, _, _ = select.select([wakeup_r], [], [], timeout)
        if not readable:
            return False
        received = os.read(wakeup_r, 64)
        return signal.SIGTERM in received or signal.SIGINT in received

    def _start(self, worker: _Worker, runtime: Path) -> None:
        slot = self._workers.index(worker)
        try:
            if worker.sock is None:
                worker.sock = self._bind()
        except OSError as exc:
            self._schedule_restart(worker)
            log.error("worker_socket_failed", slot=slot, error=str(exc))
            return
        fd = worker.sock.fileno()
        worker.process = subprocess.Popen(  # noqa: S603 (our own command line)
            self._command,
            env={
                **os.environ,
                LISTEN_FD_VAR: str(fd),
                **metrics_fanin.Workers(runtime, slot, len(self._workers)).env(),
            },
            pass_fds=(fd,),
            start_new_session=True,
        )
        worker.started_at, worker.restart_at = time.monotonic(), None
        log.info("worker_started", slot=slot, pid=worker.process.pid)

    def _schedule_restart(self, worker: _Worker) -> None:
        """At once after a worker that had served STABLE_S, else after a growing delay."""
        if worker.process is not None and time.monotonic() - worker.started_at >= STABLE_S:
            worker.restart_delay_s = 0.0
        else:
            worker.restart_delay_s = min(
                max(RESTART_DELAY_S, 2 * worker.restart_delay_s), MAX_RESTART_DELAY_S
            )
        worker.process, worker.restart_at = None, time.monotonic() + worker.restart_delay_s

    def _reap(self) -> None:
        """Close the socket of every worker that has exited and schedule its replacement."""
        for slot, worker in enumerate(self._workers):
            process = worker.process
            if process is None or process.poll() is None:
                continue
            if worker.sock is not None:
                worker.sock.close()
                worker.sock = None
            self._schedule_restart(worker)
            log.warning(
                "worker_exited",
                slot=slot,
                pid=process.pid,
                status=process.returncode,
                restart_in_s=worker.restart_delay_s,
            )

    def _drain(self) -> int:
        """Close our copies of the sockets (the port closes when the workers close theirs),
        SIGTERM every worker and wait for it; 0 if all exited 0."""
        log.info("supervisor_stopping", pid=os.getpid())
        running = []
        for worker in self._workers:
            if worker.sock is not None:
                worker.sock.close()
            if worker.process is not None:
                worker.process.send_signal(signal.SIGTERM)
                running.append(worker.process)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        statuses = []
        for process in running:
            try:
                statuses.append(process.wait(max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                process.kill()
                statuses.append(process.wait())
        log.info("supervisor_stopped", pid=os.getpid(), statuses=statuses)
        return 0 if all(status == 0 for status in statuses) else 1


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """Nothing: the signal's number reaches the supervisor's loop through the wakeup pipe."""

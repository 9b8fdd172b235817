"""Fault-test drivers: real router processes (`python -m router`), and a bounded load of signed
Twilio webhooks (calls, and optionally their endings), with runtime lookups as a voice agent
makes them. The servers the tests kill are harness's own (harness/postgres.py, harness/redis.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import sys
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from harness.net import HOST
from harness.processes import spawn, stop, wait_until
from router.signatures import twilio_signature
from tests.router_fixtures import stream_parameters

TWILIO_TOKEN = "fault-test-twilio-token-" + secrets.token_hex(8)
VOICE_PATH = "/webhooks/twilio/voice"
STATUS_PATH = "/webhooks/twilio/status"
# Seconds a call of the load lasts, as its status callback reports (CallDuration): 1 to this.
MAX_DURATION_S = 600
# Seconds a router may take to start, and to shut down gracefully.
ROUTER_TIMEOUT_S = 30.0
# A request that has not been answered in this many seconds counts as failed (Twilio waits 15).
REQUEST_TIMEOUT_S = 10.0


def _listens(pid: int, port: int) -> bool:
    """Whether process `pid` has a socket listening on TCP `port` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    fds = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(FileNotFoundError):
        return any(os.readlink(fd) in inodes for fd in fds.iterdir())
    return False


class RouterProcess:
    """`python -m router` on `port` (several may share it: SO_REUSEPORT)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        with log.open("ab") as out:
            self.proc = spawn([sys.executable, "-m", "router"], out, env=env)
        port = int(env["AGENTVER_ROUTER_PORT"])
        # Its own listening socket, not merely the port: another worker may hold it already.
        wait_until(
            lambda: _listens(self.proc.pid, port),
            f"router (log: {log})",
            self.proc,
            ROUTER_TIMEOUT_S,
        )

    def terminate(self) -> int:
        """SIGTERM, then the exit status once the worker has shut down gracefully."""
        return stop(self.proc, signal.SIGTERM, ROUTER_TIMEOUT_S)

    def kill(self) -> None:
        stop(self.proc, signal.SIGKILL)


@dataclass
class Load:
    """What a load run saw: every answered call's provider id → the call_id it was given."""

    answered: dict[str, str] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0
    # Calls whose ending (a `completed` status callback) was answered: provider id → duration.
    ended: dict[str, int] = field(default_factory=dict)
    ending_failures: Counter[str] = field(default_factory=Counter)

    @property
    def sent(self) -> int:
        return len(self.answered) + sum(self.failures.values()) + self.fallbacks

    def summary(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "answered": len(self.answered),
            "fallbacks": self.fallbacks,
            "failed": sum(self.failures.values()),
            "failures": dict(self.failures),
            "ended": len(self.ended),
            "ending_failures": dict(self.ending_failures),
        }


def _failure(exc: Exception) -> str:
    return str(exc) if isinstance(exc, RuntimeError) else type(exc).__name__


class Caller:
    """Signed Twilio webhooks to a router at `port`, as Twilio would send them: each call of a
    load, and with `hang_up` its ending right after the answer."""

    def __init__(
        self, session: aiohttp.ClientSession, port: int, to: str, *, hang_up: bool = False
    ) -> None:
        self._session = session
        self._base = f"http://{HOST}:{port}"
        self._to = to
        self._hang_up = hang_up

    async def _twilio(self, path: str, params: dict[str, str], expect: int) -> str:
        """POST a signed Twilio webhook; its body, or RuntimeError unless answered `expect`."""
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": twilio_signature(TWILIO_TOKEN, self._base + path, params.items()),
        }
        async with self._session.post(
            self._base + path, data=urlencode(params), headers=headers
        ) as resp:
            text = await resp.text()
            if resp.status != expect:
                raise RuntimeError(f"http_{resp.status}")
        return text

    async def call(self, sid: str, to: str | None = None) -> dict[str, str] | None:
        """The call's <Stream> parameters; None for the fallback answer; raises on failure."""
        params = {"CallSid": sid, "From": "+12125550123", "To": to or self._to}
        params["CallStatus"] = "ringing"
        text = await self._twilio(VOICE_PATH, params, 200)
        return stream_parameters(text) if "<Stream" in text else None

    async def end(self, sid: str, duration_s: int) -> None:
        """The call's final status callback (`completed`, CallDuration); raises unless 204."""
        params = {"CallSid": sid, "CallStatus": "completed", "CallDuration": str(duration_s)}
        await self._twilio(STATUS_PATH, params, 204)

    async def lookup(self, path: str, token: str) -> tuple[int, Any]:
        """A runtime lookup (GET) with a bearer token: its status and JSON body."""
        headers = {"Authorization": f"Bearer {token}"}
        async with self._session.get(self._base + path, headers=headers) as resp:
            return resp.status, await resp.json()

    async def one(self, load: Load) -> None:
        sid = "CA" + uuid.uuid4().hex
        try:
            answer = await self.call(sid)
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            load.failures[_failure(exc)] += 1
            return
        if answer is None:
            load.fallbacks += 1
            return
        load.answered[sid] = answer["call_id"]
        if self._hang_up:
            await self._end_one(sid, load)

    async def _end_one(self, sid: str, load: Load) -> None:
        duration_s = secrets.randbelow(MAX_DURATION_S) + 1
        try:
            await self.end(sid, duration_s)
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            load.ending_failures[_failure(exc)] += 1
            return
        load.ended[sid] = duration_s


def session() -> aiohttp.ClientSession:
    """A client opening a connection per request, as independent provider webhooks do."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
    )


async def drive(caller: Caller, load: Load, stop: asyncio.Event, concurrency: int = 4) -> None:
    """Keep `concurrency` calls in flight, each loop pausing a little (loopback, ~100 calls/s)
    until `stop` is set."""

    async def loop() -> None:
        while not stop.is_set():
            await caller.one(load)
            await asyncio.sleep(0.03)

    await asyncio.gather(*(loop() for _ in range(concurrency)))


@contextlib.asynccontextmanager
async def loaded(caller: Caller, concurrency: int = 4) -> Any:
    """Run `drive` in the background for the body of the `async with`; yields the Load."""
    load, stop = Load(), asyncio.Event()
    task = asyncio.create_task(drive(caller, load, stop, concurrency))
    try:
        yield load
    finally:
        stop.set()
        await task

"""Fault-test drivers: a rig of dedicated servers (harness's Postgres and Redis, started here and
broken by the tests) seeded with one agent and two pinned numbers, real router processes
(`python -m router`), a bounded load of signed Twilio webhooks (calls, and optionally their
endings) with runtime lookups as a voice agent makes them, and the checks and one JSON report
shape every fault scenario shares. A pytest plugin (tests/conftest.py): `rig` and `routers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import asyncpg
import pytest

from harness.net import HOST
from harness.postgres import PostgresServer, ensure_database
from harness.processes import spawn, stop, wait_until
from harness.redis import RedisServer
from router.signatures import twilio_signature
from store.agents import create_agent, publish, update_draft
from store.calls import Candidate, NewCall
from store.channels import Variant, set_channel
from store.db import create_pool
from store.migrate import migrate
from store.snapshots import load_version
from store.tokens import create_token
from tests.call_rows import new_call
from tests.conftest import AgentFactory, minimal_config
from tests.polling import eventually
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
CHANNEL = "+14155550100"
PINNED_LATER = "+14155550199"  # pinned to v1; a test may re-pin it to v2
# A router's log events for a call answered with the fallback (router/calls.py), and why
# (router/resolver.py).
FALLBACK_EVENTS = ("call_fallback", "call_routing_failed", "routing_unavailable")
# Its log events that tell what its cache went through around them.
CACHE_EVENTS = (
    "change_feed_lost",
    "change_feed_listening",
    "routing_warmup",
    "routing_warmup_failed",
)
FEED_CONNECTED = "agentver_change_feed_connected"


def listens(pid: int, port: int) -> bool:
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
    """`python -m router` on `port`, one worker in that very process, so that the test signals
    the worker itself; several may share the port, as in a rolling restart."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        command = [sys.executable, "-m", "router", "--workers", "1", "--rolling-restart"]
        with log.open("ab") as out:
            self.proc = spawn(command, out, env=env)
        port = int(env["AGENTVER_ROUTER_PORT"])
        # Its own listening socket, not merely the port: another worker may hold it already.
        wait_until(
            lambda: listens(self.proc.pid, port),
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
    # Every call's (monotonic send time, seconds until answered or failed).
    latencies: list[tuple[float, float]] = field(default_factory=list)

    def latency_ms(self, since: float, until: float) -> dict[str, float | None]:
        """p99 and max answer time of the calls sent between two monotonic times."""
        window = sorted(s for sent, s in self.latencies if since <= sent < until)
        if not window:
            return {"p99_ms": None, "max_ms": None}
        p99 = statistics.quantiles(window, n=100)[98] if len(window) > 1 else window[0]
        return {"p99_ms": round(p99 * 1000, 1), "max_ms": round(window[-1] * 1000, 1)}

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

    async def voice(self, sid: str, to: str | None = None) -> str:
        """The TwiML answering the call; raises on failure."""
        params = {"CallSid": sid, "From": "+12125550123", "To": to or self._to}
        params["CallStatus"] = "ringing"
        return await self._twilio(VOICE_PATH, params, 200)

    async def call(self, sid: str, to: str | None = None) -> dict[str, str] | None:
        """The call's <Stream> parameters; None for the fallback answer; raises on failure."""
        text = await self.voice(sid, to)
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
        sent = time.monotonic()
        try:
            answer = await self.call(sid)
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            load.failures[_failure(exc)] += 1
            return
        finally:
            load.latencies.append((sent, time.monotonic() - sent))
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


async def serves_version(caller: Caller, to: str, version: str, within_s: float = 10.0) -> float:
    """Seconds until calls to `to` are served `version` (each probe a real call)."""
    started = time.monotonic()
    await eventually(
        lambda: caller.call(f"CA-probe-{time.monotonic_ns()}", to=to),
        lambda answer: answer is not None and answer["version"] == version,
        within_s=within_s,
        interval_s=0.1,
    )
    return round(time.monotonic() - started, 3)


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


# --- the rig ---------------------------------------------------------------------------------


@dataclass
class Rig:
    workdir: Path
    postgres: PostgresServer
    redis: RedisServer
    agent_id: str
    runtime_token: str  # the voice agent's

    def env(self, port: int, spool: str = "spool", **overrides: str) -> dict[str, str]:
        """A router's environment; `overrides` replace variables (e.g. a DATABASE_URL that goes
        through a harness.proxy.TcpProxy)."""
        return {
            **os.environ,
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url,
            "AGENTVER_ROUTER_PORT": str(port),
            "AGENTVER_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
            "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
            "AGENTVER_SPOOL_DIR": str(self.workdir / spool),
            **overrides,
        }

    def router(self, port: int, name: str, **overrides: str) -> RouterProcess:
        return RouterProcess(self.env(port, **overrides), self.workdir / f"{name}.log")

    def logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.workdir.glob("*.log"))

    def fallbacks(self, router: str) -> list[dict[str, Any]]:
        """Why a router answered calls with the fallback: its fallback log events with their
        causes, and, when there are any, what its cache went through meanwhile (the rig's
        directory is gone once the module ends, so a report carries them)."""
        events = []
        for line in (self.workdir / f"{router}.log").read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") in FALLBACK_EVENTS + CACHE_EVENTS:
                    events.append(event)
        return events if any(e["event"] in FALLBACK_EVENTS for e in events) else []


async def _seed(url: str) -> tuple[str, str]:
    """Create and migrate the database; the agent's id and a runtime token."""
    await ensure_database(url)
    await migrate(url)
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        agent = await create_agent(pool, minimal_config(), "faults")
        await publish(pool, agent.id, "v1", "", "faults")
        await update_draft(pool, agent.id, lambda _: minimal_config(system_prompt="Two."), "faults")
        await publish(pool, agent.id, "v2", "", "faults")
        for number in (CHANNEL, PINNED_LATER):
            await pin_channel(pool, number, agent.id, 1)
        return agent.id, await create_token(pool, "faults-voice-agent", "runtime")
    finally:
        await pool.close()


async def pin_channel(pool: asyncpg.Pool, number: str, agent_id: str, version: int) -> None:
    await set_channel(pool, number, (Variant("v", agent_id, version, 100),), "caller", "faults")


@pytest.fixture(scope="module")
async def rig() -> AsyncIterator[Rig]:
    # Not pytest's tmp_path: as root, Postgres runs as `nobody`, who must reach its directory.
    workdir = Path(tempfile.mkdtemp(prefix="agentver-faults-"))
    os.chmod(workdir, 0o755)  # noqa: S103 (directories need o+x to be searched)
    postgres, redis = PostgresServer(workdir / "postgres"), RedisServer(workdir / "redis")
    try:
        postgres.init()
        postgres.start()
        redis.start()
        yield Rig(workdir, postgres, redis, *await _seed(postgres.url))
    finally:
        redis.kill()
        postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def routers(rig: Rig) -> Iterator[list[RouterProcess]]:
    """Router processes a test starts; killed after it if still running."""
    started: list[RouterProcess] = []
    yield started
    for router in started:
        router.kill()


async def count_recorded(rig: Rig, load: Load) -> dict[str, Any]:
    """How the answered calls landed: missing, duplicated, or with another call_id."""
    conn = await asyncpg.connect(rig.postgres.url)
    try:
        rows = await conn.fetch(
            "SELECT provider_call_id, call_id FROM calls WHERE provider_call_id = ANY($1)",
            list(load.answered),
        )
    finally:
        await conn.close()
    stored: dict[str, list[str]] = {}
    for row in rows:
        stored.setdefault(row["provider_call_id"], []).append(row["call_id"])
    return {
        "recorded": len(stored),
        "missing": sum(1 for sid in load.answered if sid not in stored),
        "duplicated": sum(1 for ids in stored.values() if len(ids) > 1),
        "mismatched": sum(1 for sid, ids in stored.items() if ids != [load.answered[sid]]),
    }


async def count_ended(rig: Rig, load: Load) -> dict[str, Any]:
    """How the endings sent landed: calls still open, or ended with another duration."""
    conn = await asyncpg.connect(rig.postgres.url)
    try:
        rows = await conn.fetch(
            "SELECT provider_call_id, status, duration_s FROM calls"
            " WHERE provider_call_id = ANY($1)",
            list(load.ended),
        )
    finally:
        await conn.close()
    right = {r["provider_call_id"] for r in rows if r["status"] == "completed"}
    wrong = {
        r["provider_call_id"] for r in rows if r["duration_s"] != load.ended[r["provider_call_id"]]
    }
    return {
        "ended_right": len(right - wrong),
        "not_ended": len(load.ended) - len(right),
        "wrong_duration": len(wrong),
    }


async def count_landed(rig: Rig, load: Load) -> tuple[dict[str, Any], dict[str, Any]]:
    return await count_recorded(rig, load), await count_ended(rig, load)


async def scrape_metric(port: int, name: str) -> float:
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def report(
    scenario: str, load: Load, recorded: dict[str, Any], fault: tuple[float, float], **extra: Any
) -> dict[str, Any]:
    """Print (and return) one scenario's figures as one JSON line, the same shape for every
    scenario; `fault` is the monotonic window the fault lasted, for the latency figures."""
    figures = {
        "scenario": scenario,
        "sent": load.sent,
        "answered": len(load.answered),
        "fallbacks": load.fallbacks,
        "failed": sum(load.failures.values()),
        "recorded": recorded["recorded"],
        "missing": recorded["missing"],
        "duplicated": recorded["duplicated"],
        "mismatched": recorded["mismatched"],
        **{f"{name}_during_fault": value for name, value in load.latency_ms(*fault).items()},
        **extra,
    }
    print(json.dumps(figures))
    return figures


@pytest.fixture
async def call_to(pool: asyncpg.Pool, make_agent: AgentFactory) -> Callable[[str], NewCall]:
    """Calls (by provider call id) served version 1 of a new agent."""
    agent = await make_agent(versions=1)
    served = await load_version(pool, agent["id"], 1)
    candidate = Candidate("a", served.agent_id, 1, None, served.config_hash)
    return lambda sid: new_call(sid, "a", (candidate,), remember=False)

"""`python -m router` and `python -m admin` as real processes: the command line, a port never
shared by accident, pre-forked workers under a supervisor (a killed one replaced, SIGTERM drains
all, a scrape of any answers for all), and the rolling-restart flag that allows sharing."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from prometheus_client.samples import Sample

from harness.net import HOST, free_port
from harness.processes import spawn, stop, wait_until
from httpkit.metrics_fanin import UNREACHABLE
from httpkit.serve import ACCEPT_GRACE_S
from router.signatures import twilio_signature
from store.settings import Settings
from tests.conftest import AgentFactory
from tests.faults import listens
from tests.router_fixtures import CALLER, CHANNEL
from tests.test_metrics_fanin import families

# Seconds a server may take to start and to drain on a loaded 2-core machine.
START_TIMEOUT_S = 60.0
TWILIO_TOKEN = "serve-test-twilio-token"
VOICE_PATH = "/webhooks/twilio/voice"


def server_env(settings: Settings, workdir: Path, port: int, **extra: str) -> dict[str, str]:
    """A router's (and admin's) environment against this test run's database and Redis."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "AGENTVER_REDIS_PREFIX": settings.redis_prefix,
        "AGENTVER_HOST": HOST,
        "AGENTVER_ROUTER_PORT": str(port),
        "AGENTVER_ADMIN_PORT": str(port),
        "AGENTVER_PUBLIC_BASE_URL": f"http://{HOST}:{port}",
        "AGENTVER_SPOOL_DIR": str(workdir / "spool"),
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
        **extra,
    }


class Servers:
    """Server processes a test starts, each logging to a file of its own; killed at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as log:
            proc = spawn([sys.executable, "-m", *args], log, env=env)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text(errors="replace")

    def kill_all(self) -> None:
        for proc in self.procs:
            stop(proc, signal.SIGKILL)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path)
    yield started
    started.kill_all()


def children(pid: int) -> set[int]:
    """The live child processes of `pid` (Linux /proc)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def serving_pids(candidates: set[int], port: int) -> set[int]:
    """Which of the processes listen on `port` (a worker listens only once it serves)."""
    return {pid for pid in candidates if listens(pid, port)}


def wait_serving(proc: subprocess.Popen[bytes], port: int, workers: int = 1) -> set[int]:
    """Wait until `proc` (or, under a supervisor, `workers` of its children) serves `port`;
    the serving pids."""
    pids: set[int] = set()

    def ready() -> bool:
        nonlocal pids
        candidates = {proc.pid} if workers == 1 else children(proc.pid)
        pids = serving_pids(candidates, port)
        return len(pids) == workers

    wait_until(ready, f"{proc.args!r} on port {port}", proc, START_TIMEOUT_S)
    return pids


def two_workers(
    servers: Servers, service: str, env: dict[str, str], port: int
) -> tuple[subprocess.Popen[bytes], set[int]]:
    """`python -m <service> --workers 2` on `port` once both workers serve: its supervisor
    and their pids."""
    supervisor = servers.start([service, "--workers", "2"], env, "supervisor")
    return supervisor, wait_serving(supervisor, port, workers=2)


def twilio_request(port: int, token: str = TWILIO_TOKEN) -> tuple[str, bytes]:
    """A signed incoming-call webhook for the router on `port`: its head and its body."""
    params = {"CallSid": "CA" + uuid.uuid4().hex, "From": CALLER, "To": CHANNEL}
    params["CallStatus"] = "ringing"
    url = f"http://{HOST}:{port}{VOICE_PATH}"
    body = urlencode(params).encode()
    head = (
        f"POST {VOICE_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"X-Twilio-Signature: {twilio_signature(token, url, params.items())}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head, body


async def signed_calls(port: int, count: int, token: str = TWILIO_TOKEN) -> list[int]:
    """The statuses of `count` signed calls, each on a connection of its own (as providers
    send them, and so that SO_REUSEPORT spreads them over every listener)."""
    statuses = []
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(count):
            head, body = twilio_request(port, token)
            headers = dict(line.split(": ", 1) for line in head.split("\r\n")[2:5])
            async with session.post(
                f"http://{HOST}:{port}{VOICE_PATH}", data=body, headers=headers
            ) as resp:
                statuses.append(resp.status)
    return statuses


@pytest.fixture
async def pinned(make_pinned_agent: AgentFactory) -> dict[str, Any]:
    """CHANNEL pinned to version 1 of an agent, so that calls get a stream."""
    return await make_pinned_agent(versions=1, pinned=1)


@pytest.mark.parametrize("service", ["router", "admin"])
def test_help_prints_usage_and_exits_without_serving(
    service: str, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    run = subprocess.run(  # noqa: S603 (fixed arguments)
        [sys.executable, "-m", service, "--help"],
        env=server_env(settings, tmp_path, port),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"usage: python -m {service}")
    for option in ("--host", "--port", "--workers", "--rolling-restart"):
        assert option in run.stdout
    assert run.stderr == ""  # no log line: nothing was started


async def test_a_second_router_on_a_live_port_exits_while_the_first_keeps_serving(
    settings: Settings, tmp_path: Path, servers: Servers, pinned: dict[str, Any]
) -> None:
    port = free_port()
    first = servers.start(["router", "--workers", "1"], server_env(settings, tmp_path, port), "a")
    wait_serving(first, port)
    # Another configuration: had it joined the port, some of the calls below would get 403.
    other = server_env(settings, tmp_path, port, TWILIO_AUTH_TOKEN="another-token")
    for args in (["--workers", "1"], ["--workers", "2"], []):
        second = servers.start(["router", *args], other, "b")
        assert second.wait(START_TIMEOUT_S) == 98
        assert "address in use" in servers.log("b")
        assert f"{HOST}:{port}" in servers.log("b")
    # The help never starts a server either (it once started a second router beside the first).
    assert servers.start(["router", "--help"], other, "help").wait(START_TIMEOUT_S) == 0

    assert await signed_calls(port, 40) == [200] * 40
    assert serving_pids({first.pid}, port) == {first.pid}


async def test_an_admin_on_a_live_port_exits_too(
    settings: Settings, tmp_path: Path, servers: Servers
) -> None:
    port = free_port()
    env = server_env(settings, tmp_path, port)
    first = servers.start(["admin"], env, "a")
    wait_serving(first, port)
    second = servers.start(["admin"], env, "b")
    assert second.wait(START_TIMEOUT_S) == 98
    assert "address in use" in servers.log("b")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{HOST}:{port}/healthz") as resp,
    ):
        assert (resp.status, await resp.json()) == (200, {"status": "ok"})


async def in_flight_call(port: int) -> tuple[asyncio.StreamWriter, asyncio.StreamReader, bytes]:
    """A signed call whose request is sent but for the last bytes of its body: its handler is
    running, waiting for them."""
    head, body = twilio_request(port)
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(head.encode() + body[:-5])
    await writer.drain()
    return writer, reader, body[-5:]


async def test_workers_serve_from_their_own_pids_a_killed_one_is_replaced_and_sigterm_drains(
    settings: Settings, tmp_path: Path, servers: Servers, pinned: dict[str, Any]
) -> None:
    port = free_port()
    supervisor, workers = two_workers(servers, "router", server_env(settings, tmp_path, port), port)
    assert supervisor.pid not in workers
    assert await signed_calls(port, 20) == [200] * 20

    killed = min(workers)
    os.kill(killed, signal.SIGKILL)
    replaced = wait_serving(supervisor, port, workers=2)
    assert killed not in replaced and max(workers) in replaced
    assert await signed_calls(port, 20) == [200] * 20

    # A call in flight when SIGTERM comes, its last bytes still on the way, is answered; then
    # every worker and the supervisor exit 0 and the port closes. (Bytes arriving after a
    # worker's accept grace are dropped by aiohttp's shutdown: httpkit/serve.py, ACCEPT_GRACE_S.)
    writer, reader, rest = await in_flight_call(port)
    await asyncio.sleep(0.2)  # its handler is running
    supervisor.send_signal(signal.SIGTERM)
    await asyncio.sleep(ACCEPT_GRACE_S / 5)
    writer.write(rest)
    answer = await asyncio.wait_for(reader.read(), START_TIMEOUT_S)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"<Stream" in answer
    assert await asyncio.to_thread(supervisor.wait, START_TIMEOUT_S) == 0
    assert not any(listens(pid, port) for pid in replaced)
    log = servers.log("supervisor")
    assert '"event": "worker_exited"' in log and '"statuses": [0, 0]' in log


async def test_the_rolling_restart_flag_shares_the_port_and_the_old_router_hands_over(
    settings: Settings, tmp_path: Path, servers: Servers, pinned: dict[str, Any]
) -> None:
    port = free_port()
    env = server_env(settings, tmp_path, port)
    old = servers.start(["router", "--workers", "1"], env, "old")
    wait_serving(old, port)
    new = servers.start(["router", "--workers", "1", "--rolling-restart"], env, "new")
    wait_serving(new, port)
    assert serving_pids({old.pid, new.pid}, port) == {old.pid, new.pid}

    assert stop(old, signal.SIGTERM, START_TIMEOUT_S) == 0
    started = time.monotonic()
    assert await signed_calls(port, 20) == [200] * 20
    assert time.monotonic() - started < 10
    assert serving_pids({new.pid}, port) == {new.pid}


async def scrape(port: int) -> dict[str, list[Sample]]:
    """One scrape of `port` on a connection of its own (any worker may take it), by family;
    fails unless it is answered and valid."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(f"http://{HOST}:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        return families(await resp.text())


def workers_in(scraped: dict[str, list[Sample]]) -> set[str]:
    return {s.labels["worker"] for s in scraped["process_cpu_seconds"]}


def routed_by_worker(scraped: dict[str, list[Sample]]) -> dict[str, float]:
    """Calls answered, by the worker that answered them."""
    calls: dict[str, float] = {}
    for s in scraped["agentver_calls_routed"]:
        if s.name == "agentver_calls_routed_total":
            calls[s.labels["worker"]] = calls.get(s.labels["worker"], 0.0) + s.value
    return calls


def counters(scraped: dict[str, list[Sample]]) -> dict[tuple[str, frozenset[Any]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for samples in scraped.values()
        for s in samples
        if s.name.endswith(("_total", "_count"))
    }


def unreachable(scraped: dict[str, list[Sample]]) -> float:
    [sample] = scraped[UNREACHABLE]
    return sample.value


def workers_dir(pid: int) -> Path:
    """The directory a supervisor gave its worker `pid` (Linux /proc)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    [directory] = [v.split(b"=", 1)[1] for v in environ if v.startswith(b"AGENTVER_WORKERS_DIR=")]
    return Path(directory.decode())


async def test_any_worker_answers_a_scrape_for_all_and_a_replaced_one_starts_over(
    settings: Settings, tmp_path: Path, servers: Servers, pinned: dict[str, Any]
) -> None:
    port = free_port()
    supervisor, pids = two_workers(servers, "router", server_env(settings, tmp_path, port), port)
    runtime = workers_dir(min(pids))
    assert runtime == workers_dir(max(pids))
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
    sent = 0
    while len(routed_by_worker(await scrape(port))) < 2:  # until both workers served calls
        assert sent < 200
        assert await signed_calls(port, 10) == [200] * 10
        sent += 10

    scrapes = [await scrape(port) for _ in range(6)]
    scrapes += await asyncio.gather(*(scrape(port) for _ in range(6)))  # at once
    for scraped in scrapes:
        assert workers_in(scraped) == {"0", "1"}
        assert routed_by_worker(scraped).keys() == {"0", "1"}
        assert sum(routed_by_worker(scraped).values()) == sent
        assert unreachable(scraped) == 0
    for before, after in itertools.pairwise(scrapes[:6]):
        grown = counters(after)
        assert [k for k, v in counters(before).items() if grown.get(k, -1.0) < v] == []

    # A killed worker's series are left out (and counted) until its replacement answers; its
    # slot's counters then start over while the other worker's go on.
    killed, last = min(pids), routed_by_worker(scrapes[5])
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: killed not in children(supervisor.pid), "reaped", supervisor)
    during = [await scrape(port)]
    deadline = time.monotonic() + START_TIMEOUT_S
    while unreachable(during[-1]) > 0:
        assert time.monotonic() < deadline
        during.append(await scrape(port))
    missing = [scraped for scraped in during if unreachable(scraped) == 1]
    assert missing  # a replacement takes at least RESTART_DELAY_S
    [survivor] = {worker for scraped in missing for worker in workers_in(scraped)}
    assert all(routed_by_worker(scraped).keys() == {survivor} for scraped in missing)
    assert workers_in(during[-1]) == {"0", "1"}
    assert await signed_calls(port, 20) == [200] * 20
    now = routed_by_worker(await scrape(port))
    assert now[survivor] >= last[survivor]
    assert sum(now.values()) == last[survivor] + 20

    assert stop(supervisor, signal.SIGTERM, START_TIMEOUT_S) == 0
    assert not runtime.exists()


async def test_admin_workers_answer_a_scrape_for_all(
    settings: Settings, tmp_path: Path, servers: Servers
) -> None:
    port = free_port()
    two_workers(servers, "admin", server_env(settings, tmp_path, port), port)
    for _ in range(4):
        scraped = await scrape(port)
        assert workers_in(scraped) == {"0", "1"}
        assert unreachable(scraped) == 0

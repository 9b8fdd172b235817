"""`make bench`: the router's hot path against a bare aiohttp ceiling and a naive per-call Postgres
router, on this machine, in one run.

It creates a scratch database (migrated, seeded with 100,000 channels), starts every server as a
real subprocess (`python -m router`, `python -m loadtests.baselines ceiling|naive`), drives each
with the load generator in a process of its own (loadtests/loadgen.py), measures pin-change
propagation itself, prints the ratio table and saves everything under loadtests/results/. The
scratch database and this run's Redis keys are removed at the end, whatever happened. The
admin service (`python -m admin`) runs beside them throughout, as it would in production.

Durations: BENCH_DURATION_S (default 10) measured seconds per point after BENCH_WARMUP_S
(default 2); the whole run takes about seven minutes on two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from harness.net import HOST, free_port
from harness.postgres import create_database, drop_database
from harness.processes import spawn, stop, wait_until
from harness.redis import delete_prefixed
from loadtests import dataset, procstat, speed, workload
from loadtests.httpclient import Connection, build_request
from loadtests.loadgen import ROUTED_MARK, percentiles
from store.channels import Variant, set_channel
from store.db import create_pool
from store.migrate import migrate
from store.settings import DEFAULT_DATABASE_URL, DEFAULT_REDIS_URL
from store.tokens import create_token

RESULTS = Path(__file__).parent / "results"
SMALL_SET = 1_000
LARGE_SET = 100_000
# Alternating rounds of the 1k and 100k open-loop points: one round each, in a fixed order,
# moved the ratio of their p50s between 0.33x and 1.45x across runs of one tree.
LARGE_SET_ROUNDS = 3
# Channel LARGE_SET (one past the load's range): pinned, and repinned by the propagation test.
PROPAGATION_CHANNEL = LARGE_SET
PROPAGATION_CHANGES = 200
# Seconds: a change not seen by every worker by then counts as lost.
PROPAGATION_LIMIT_S = 2.0
# Seconds between two probe calls to each worker while a change propagates.
PROBE_INTERVAL_S = 0.002
# Commit times (agentver_call_commit_seconds bucket bounds, ms) a point counts the batches over:
# every call of such a batch waits at least that long (loadtests/README.md, the open loop).
SLOW_COMMIT_MS = (10, 50)
# Closed-loop connections per point: a moderate and a heavy concurrency (the first also sets the
# open-loop rates: half its maximum).
CLOSED_CONNECTIONS = (32, 128)
# Enough that a stall piles requests up (as real traffic would) rather than being throttled away.
OPEN_CONNECTIONS = 256
CONFIG_LOOKUP_IDS = 20_000
CEILING_REQUESTS = 30_000
CALL_REQUESTS = 120_000
# Seconds a server may take to accept connections.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# Rounds of the closed-loop points, every server's in each: one point of each, one after the
# other, put the router at 0.29x to 0.33x the ceiling across three runs of one tree, the
# ceiling's own rate moving by 15% from run to run (loadtests/README.md). The table takes the
# median of the rounds' ratios, each between points a minute or two apart.
WEBHOOK_ROUNDS = 3
KINDS = ("ceiling", "naive", "router")
# Groups of points `--only` can select; the table needs them all.
GROUPS = ("webhooks", "large", "propagation")
VERSION_PARAM = re.compile(rb'name="version" value="([^"]+)"')

TARGETS = {
    "webhook_vs_ceiling_32": 0.30,
    "webhook_vs_naive_32": 2.0,
    "webhook_vs_naive_128": 2.5,
    "router_cpu_us_per_call": 120.0,
    "db_cpu_us_per_call": 70.0,
    "open_loop_p99_ms": 10.0,
    "large_set_p50_ratio": 1.10,
    "config_vs_ceiling": 0.6,
    "propagation_p99_ms": 100.0,
    "rss_mb": 300.0,
    # A scrape holds up the calls arriving while the router renders it: at Prometheus' 15 s
    # interval (deploy/prometheus.yml), 15 ms delays 0.1% of the calls, a tenth of what the open
    # loop's p99 allows over its target.
    "scrape_ms": 15.0,
}


@dataclass
class Env:
    """This run's scratch resources."""

    database_url: str
    redis_url: str
    redis_prefix: str
    twilio_token: str
    runtime_token: str
    workdir: Path
    duration_s: float
    warmup_s: float


class Servers:
    """Server subprocesses of one kind, on ports of their own; stopped on exit."""

    def __init__(self, env: Env, kind: str, workers: int) -> None:
        self.env, self.kind = env, kind
        self.ports = [free_port() for _ in range(workers)]
        self.procs: list[subprocess.Popen[bytes]] = []
        # Seconds from launching the servers to every one of them answering.
        self.startup_s = 0.0

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def _command(self) -> list[str]:
        if self.kind in ("router", "admin"):
            return [sys.executable, "-m", self.kind, "--workers", "1"]
        return [sys.executable, "-m", "loadtests.baselines", self.kind]

    def start(self) -> None:
        for port in self.ports:
            env = {
                **os.environ,
                "DATABASE_URL": self.env.database_url,
                "REDIS_URL": self.env.redis_url,
                "AGENTVER_REDIS_PREFIX": self.env.redis_prefix,
                "TWILIO_AUTH_TOKEN": self.env.twilio_token,
                "AGENTVER_ROUTER_PORT": str(port),
                "AGENTVER_ADMIN_PORT": str(port),
                "AGENTVER_PUBLIC_BASE_URL": workload.PUBLIC_BASE_URL,
                "AGENTVER_MEDIA_STREAM_URL": "wss://media.bench.example/stream",
                "AGENTVER_SPOOL_DIR": str(self.env.workdir / f"spool-{port}"),
            }
            with (self.env.workdir / f"{self.kind}-{port}.log").open("ab") as log:
                self.procs.append(spawn(self._command(), log, env=env))
        started = time.monotonic()
        deadline = started + START_TIMEOUT_S
        for proc, port in zip(self.procs, self.ports, strict=True):
            what = f"{self.kind} on port {port} (log in {self.env.workdir})"
            wait_until(functools.partial(_ready, port), what, proc, deadline - time.monotonic())
        self.startup_s = time.monotonic() - started

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc, signal.SIGTERM, STOP_TIMEOUT_S)
        self.procs.clear()


def _ready(port: int) -> bool:
    """The server accepts connections and answers HTTP (the router: /readyz says ready)."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5) as s:
            s.sendall(build_request("GET", "/readyz", HOST, {"Connection": "close"}))
            head = s.recv(64)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.1 ") and head[9:12] in (b"200", b"404", b"405")


@contextlib.contextmanager
def serving(env: Env, kind: str, workers: int = 1) -> Iterator[Servers]:
    servers = Servers(env, kind, workers)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()


# The checkpointer's pid, and when the last checkpoint completed.
CHECKPOINTER = """
SELECT (SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'),
       (pg_control_checkpoint()).checkpoint_time
"""


async def checkpointer(database_url: str, *, fresh: bool = False) -> tuple[int, datetime]:
    """CHECKPOINTER's two figures, after a checkpoint of its own if `fresh`. A point during
    which the checkpointer ran (its CPU, from /proc) shared the disk with a checkpoint's writes,
    and one during which a checkpoint completed with its fsyncs of the data files too: they
    hold up the WAL's flushes, and so the commits (loadtests/README.md)."""
    conn = await asyncpg.connect(database_url)
    try:
        if fresh:
            await conn.execute("CHECKPOINT")
        pid, completed = await conn.fetchrow(CHECKPOINTER)
    finally:
        await conn.close()
    return pid, completed


def load(
    env: Env,
    servers: Servers,
    requests: dict[str, Any],
    *,
    rate: float | None = None,
    expect: str | None = ROUTED_MARK,
    reuse: bool = False,
    connections: int = CLOSED_CONNECTIONS[0],
    label: str,
) -> dict[str, Any]:
    """One load-generator run against `servers` (closed loop over `connections`, or open loop at
    `rate`); its JSON report."""
    spec = {
        "mode": "open" if rate else "closed",
        "targets": [[HOST, p] for p in servers.ports],
        "connections": OPEN_CONNECTIONS if rate else connections,
        "duration_s": env.duration_s,
        "warmup_s": env.warmup_s,
        "requests": requests,
        "rate": rate,
        "expect": expect,
        # Built before the window (about 30 us each): more than any point here sends, except
        # the ceiling's, which may send the same ones again.
        "max_requests": CEILING_REQUESTS if servers.kind == "ceiling" else CALL_REQUESTS,
        "reuse": reuse or servers.kind == "ceiling",
        "server_pids": servers.pids,
        "database_url": env.database_url if servers.kind != "ceiling" else None,
        "metrics": servers.kind == "router",
    }
    spec_path = env.workdir / f"{label}.spec.json"
    out_path = env.workdir / f"{label}.out.json"
    speed_path = env.workdir / f"{label}.speed.json"
    spec_path.write_text(json.dumps(spec))
    limit = env.duration_s + env.warmup_s + 120
    # Every point that writes starts on a checkpoint of its own: Postgres starts one for every
    # ~540 MB of WAL (max_wal_size 1 GB here) or 5 minutes, so no checkpoint runs within a point
    # (80-150 MB of WAL at the bench's rates), and no point's figures depend on where the
    # server's checkpoints fell (loadtests/README.md, "Checkpoints, some of the time").
    checkpoint = (
        asyncio.run(checkpointer(env.database_url, fresh=True))
        if servers.kind != "ceiling"
        else None
    )
    checkpointer_s = procstat.run_seconds(checkpoint[0]) if checkpoint else 0.0
    generator = [sys.executable, "-m", "loadtests.loadgen", str(spec_path), str(out_path)]
    with subprocess.Popen(generator) as loadgen:  # noqa: S603
        probe = _speed_probe(
            out_path.with_suffix(".measuring"), loadgen, env.duration_s, speed_path
        )
        try:
            failed = loadgen.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            loadgen.kill()
            raise
        if failed:
            raise subprocess.CalledProcessError(failed, generator)
    if probe is not None:
        probe.wait(timeout=limit)
    report: dict[str, Any] = json.loads(out_path.read_text())
    report["server"] = f"{servers.kind} x{len(servers.ports)}"
    report["cpu_speed"] = json.loads(speed_path.read_text())
    # Beside p99_ms_by_second: whether a point's slow seconds were the host's.
    report["probe_ms_by_second"] = speed.by_second(
        report["cpu_speed"], report["window_started_at"], len(report["p99_ms_by_second"])
    )
    writes = ""
    if (pages := report.pop("metrics_pages", None)) is not None:
        before, after = (_router_counts(p) for p in pages)
        d = {name: after[name] - before[name] for name in ROUTER_COUNTS}
        calls, batches, resolved = d["calls"], d["batches"], d["resolved"]
        report["calls_per_batch"] = round(calls / batches, 1) if batches else None
        # From the commits' own histogram: a page read under load may fall between a batch's
        # commit and its size being counted.
        slow = [d["commits"] - d[f"commits_within_{ms}"] for ms in SLOW_COMMIT_MS]
        report["commits_over_ms"] = dict(zip(map(str, SLOW_COMMIT_MS), slow, strict=True))
        report["resolved_over_target"] = (
            round(1 - d["resolved_within_target"] / resolved, 4) if resolved else None
        )
        if batches:
            writes = f"  {report['calls_per_batch']} a batch, commits over " + ", ".join(
                f"{ms} ms {n:.0f}" for ms, n in zip(SLOW_COMMIT_MS, slow, strict=True)
            )
            writes += f", WAL {report['wal_bytes_per_call'] / 1000:.1f} KB a call"
        if rate:
            writes += f", {_open_tail(report)}"
    if checkpoint is not None:
        pid, completed = asyncio.run(checkpointer(env.database_url))
        report["checkpointer"] = {
            "run_ms": round((procstat.run_seconds(pid) - checkpointer_s) * 1000, 1),
            "completed": completed != checkpoint[1],
        }
        writes += f"  checkpointer ran {report['checkpointer']['run_ms']:.0f} ms" + (
            ", a checkpoint completed" if report["checkpointer"]["completed"] else ""
        )
    lat = report["latency_ms"]
    print(
        f"  {label:<28} {report['achieved_rate']:>9.0f}/s  p50 {lat.get('p50', 0):7.2f} ms  "
        f"p99 {lat.get('p99', 0):7.2f} ms  errors {report['errors']}  "
        f"server {report['server_cpu_us_per_call']:.0f} us/call "
        f"(waited {report['server_wait_us_per_call']:.0f})  "
        f"db {report['db_cpu_us_per_call']:.0f} us/call  "
        f"client {report['client_cpu_share_of_machine']:.0%}  probe {_probe_ms(report)} ms"
        + writes,
        flush=True,
    )
    return report


def _speed_probe(
    measuring: Path, loadgen: subprocess.Popen[bytes], duration_s: float, out: Path
) -> subprocess.Popen[bytes] | None:
    """The speed probe (loadtests/speed.py), started as the load generator starts measuring
    (it first builds its requests, for up to seconds), to time how fast the machine ran Python
    in the window; None if the generator exits first."""
    while not measuring.exists():
        if loadgen.poll() is not None:
            return None
        time.sleep(0.01)
    probe = [sys.executable, "-m", "loadtests.speed", "0", str(duration_s), str(out)]
    return subprocess.Popen(probe)  # noqa: S603


def _open_tail(report: dict[str, Any]) -> str:
    """Where an open-loop point's tail comes from: the share of webhooks that took the router
    itself longer than the p99 target, and how late the load generator sent its requests."""
    share = report.get("resolved_over_target")
    return (
        f"router's own over {TARGETS['open_loop_p99_ms']:.0f} ms: "
        + (f"{share:.1%}" if share is not None else "none resolved")
        + ", sends late p99 "
        f"{report['send_late_ms'].get('p99', 0):.1f} ms"
    )


def _probe_ms(report: dict[str, Any]) -> str:
    """The speed probe's median ms per CPU during a point, as `0.87/1.52`."""
    return "/".join(f"{cpu['median_ms']:.2f}" for cpu in report["cpu_speed"].values())


def twilio(env: Env, channels: int, seed: int) -> dict[str, Any]:
    return {"kind": "twilio", "token": env.twilio_token, "channels": channels, "seed": seed}


# --- pin-change propagation -------------------------------------------------------------------


async def _probe(conn: Connection, env: Env, to: str) -> tuple[bytes | None, float]:
    caller = workload.caller_number(secrets.randbelow(workload.CALLERS))
    response = await conn.request(workload.twilio_request(env.twilio_token, to, caller))
    found = VERSION_PARAM.search(response.body)
    return (found.group(1) if found else None), response.at


async def _watch(
    env: Env, port: int, to: str, want: bytes, t0: float, pool: list[Connection]
) -> tuple[float, float] | None:
    """Probe one worker every PROBE_INTERVAL_S until a call is served `want`: (sent, served)
    seconds after t0, or None past PROPAGATION_LIMIT_S."""
    first: list[tuple[float, float]] = []
    pending: set[asyncio.Task[None]] = set()

    async def probe() -> None:
        conn = pool.pop() if pool else await Connection.open(HOST, port)
        sent = time.perf_counter()
        version, served = await _probe(conn, env, to)
        pool.append(conn)
        if version == want:
            first.append((sent - t0, served - t0))

    deadline = t0 + PROPAGATION_LIMIT_S
    while not first and time.perf_counter() < deadline:
        task = asyncio.ensure_future(probe())
        pending.add(task)
        task.add_done_callback(pending.discard)
        await asyncio.sleep(PROBE_INTERVAL_S)
    if pending:
        await asyncio.wait(pending, timeout=PROPAGATION_LIMIT_S)
    return min(first, key=lambda f: f[1]) if first else None


async def propagation(env: Env, servers: Servers) -> dict[str, Any]:
    """Repin a channel PROPAGATION_CHANGES times; for each, the time from the commit to the
    first call each worker serves with the new routing; the worst worker counts."""
    pool = await create_pool(env.database_url, min_size=1, max_size=2)
    to = workload.channel_number(PROPAGATION_CHANNEL)
    agent = f"agt_{PROPAGATION_CHANNEL % dataset.AGENTS:016x}"
    conns: dict[int, list[Connection]] = {p: [] for p in servers.ports}
    served: list[float] = []
    sent: list[float] = []
    lost = 0
    try:
        for k in range(PROPAGATION_CHANGES):
            version = 1 + (k + 1) % dataset.VERSIONS
            await set_channel(
                pool, to, (Variant("default", agent, version, 100),), "caller", "bench"
            )
            t0 = time.perf_counter()  # the admin's commit has returned
            want = str(version).encode()
            seen = await asyncio.gather(
                *(_watch(env, p, to, want, t0, conns[p]) for p in servers.ports)
            )
            if any(s is None for s in seen):
                lost += 1
                continue
            sent.append(max(s[0] for s in seen if s is not None))
            served.append(max(s[1] for s in seen if s is not None))
            await asyncio.sleep(0.02)
    finally:
        await pool.close()
        for pool_conns in conns.values():
            for c in pool_conns:
                c.close()
    return {
        "changes": PROPAGATION_CHANGES,
        "workers": len(servers.ports),
        "lost": lost,
        "served_ms": {k: round(v, 2) for k, v in percentiles(served).items()},
        "first_new_call_sent_ms": {k: round(v, 2) for k, v in percentiles(sent).items()},
    }


# --- set-up and tear-down -------------------------------------------------------------------


async def _create_database(server_url: str, name: str) -> str:
    url = await create_database(server_url, name)
    await migrate(url)
    conn = await asyncpg.connect(url)
    try:
        await dataset.seed_agents(conn)
        await dataset.seed_channels(conn, 0, LARGE_SET + 1)
    finally:
        await conn.close()
    return url


async def _runtime_token(url: str) -> str:
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        return await create_token(pool, "bench-voice-agent", "runtime")
    finally:
        await pool.close()


async def _recent_call_ids(url: str, limit: int) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT call_id FROM calls ORDER BY started_at DESC LIMIT $1", limit
        )
    finally:
        await conn.close()
    return [r["call_id"] for r in rows]


@contextlib.contextmanager
def scratch_env() -> Iterator[Env]:
    server_url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    run_id = secrets.token_hex(4)
    name = f"agentver_bench_{run_id}"
    prefix = f"agentver-bench-{run_id}:"
    with tempfile.TemporaryDirectory(prefix="agentver-bench-") as tmp:
        try:
            started = time.monotonic()
            url = asyncio.run(_create_database(server_url, name))
            print(f"seeded {name} in {time.monotonic() - started:.1f} s", flush=True)
            yield Env(
                database_url=url,
                redis_url=redis_url,
                redis_prefix=prefix,
                twilio_token=secrets.token_hex(16),
                runtime_token=asyncio.run(_runtime_token(url)),
                workdir=Path(tmp),
                duration_s=float(os.environ.get("BENCH_DURATION_S", "10")),
                warmup_s=float(os.environ.get("BENCH_WARMUP_S", "2")),
            )
        finally:
            asyncio.run(drop_database(server_url, name))
            asyncio.run(delete_prefixed(redis_url, prefix))


# --- the scenarios ----------------------------------------------------------------------------


def _metrics(port: int) -> str:
    """The router's /metrics page."""
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(build_request("GET", "/metrics", HOST, {"Connection": "close"}))
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def _l1_hit_ratio(port: int, kind: str) -> float | None:
    """The share of `kind` lookups answered from L1, from the router's /metrics."""
    counts: dict[str, float] = {}
    pattern = rf'agentver_cache_lookups_total\{{kind="{kind}",result="(\w+)",tier="l1"\}} (\S+)'
    for result, value in re.findall(pattern, _metrics(port)):
        counts[result] = float(value)
    total = counts.get("hit", 0.0) + counts.get("miss", 0.0)
    return counts.get("hit", 0.0) / total if total else None


# What a point reads from the routers' /metrics pages, which the load generator takes half a
# second before the window and right after it (the warm-up's first moments, after the point's
# checkpoint, left out), each summed over the routers and their label sets: the calls
# and group-commit batches written, the batches committed within each of SLOW_COMMIT_MS, and
# the webhooks resolved and recorded, and of them those within the open loop's p99 target (the
# router's own view of that tail, from a handler's start to its record's commit).
ROUTER_COUNTS = {
    "calls": r"agentver_call_batch_size_sum (\S+)",
    "batches": r"agentver_call_batch_size_count (\S+)",
    "commits": r"agentver_call_commit_seconds_count (\S+)",
    **{
        f"commits_within_{ms}": rf'agentver_call_commit_seconds_bucket{{le="{ms / 1000}"}} (\S+)'
        for ms in SLOW_COMMIT_MS
    },
    "resolved": r"agentver_resolution_seconds_count\{[^}]*\} (\S+)",
    "resolved_within_target": (
        r'agentver_resolution_seconds_bucket\{[^}]*le="'
        + str(TARGETS["open_loop_p99_ms"] / 1000)
        + r'"[^}]*\} (\S+)'
    ),
}


def router_counts(page: str) -> dict[str, float]:
    """ROUTER_COUNTS in one router's /metrics page."""
    return {
        name: sum(float(found) for found in re.findall(pattern, page))
        for name, pattern in ROUTER_COUNTS.items()
    }


def _router_counts(pages: list[str]) -> dict[str, float]:
    """ROUTER_COUNTS summed over the routers' pages."""
    counts = [router_counts(page) for page in pages]
    return {name: sum(c[name] for c in counts) for name in ROUTER_COUNTS}


# Scrapes of /metrics a point times, one after the other, on an otherwise idle router.
SCRAPES = 5


def _scrape(servers: Servers) -> dict[str, float]:
    """What a scrape of the first router's /metrics costs: the page is rendered on the event
    loop that every call waits on, so a scrape holds up the calls that arrive meanwhile for
    about that long (loadtests/README.md, "The scrape"). The median wall time of SCRAPES
    scrapes, the router's CPU a scrape (from /proc, in clock ticks: summed over the scrapes),
    and the page's size."""
    pid, port = servers.pids[0], servers.ports[0]
    cpu = procstat.cpu_by_pid([pid])[pid]
    taken = []
    for _ in range(SCRAPES):
        started = time.perf_counter()
        page = _metrics(port)
        taken.append(time.perf_counter() - started)
    return {
        "ms": round(statistics.median(taken) * 1000, 1),
        "router_cpu_ms": round((procstat.cpu_by_pid([pid])[pid] - cpu) * 1000 / SCRAPES, 1),
        "samples": sum(1 for line in page.splitlines() if line and not line.startswith("#")),
        "bytes": len(page),
    }


def _spooled(port: int) -> float:
    """Calls the router spooled (Postgres unavailable, or a commit past its budget): a point
    that spooled measured the spool, not the record path."""
    found = re.search(r'agentver_spool_records_total\{event="spooled"\} (\S+)', _metrics(port))
    return float(found.group(1)) if found else 0.0


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The report of median rate among a point's rounds (the upper one of an even number)."""
    return sorted(rounds, key=lambda r: r["achieved_rate"])[len(rounds) // 2]


def _webhooks(env: Env, runs: dict[str, Any], seed: Iterator[int]) -> None:
    """WEBHOOK_ROUNDS rounds in which each server (one worker, 1,000 channels, started for the
    round, so that only its own connections are the database's) runs its closed-loop points at
    every CLOSED_CONNECTIONS, the first server of a round rotating: `{kind}_{c}_rounds` lists a
    point's rounds and `{kind}_{c}` is its round of median rate. In the last round, the
    ceiling's config lookups, and the router's open loop at half its median 32-connection rate
    and its config lookups."""
    print(f"1 worker, 1,000 channels, {WEBHOOK_ROUNDS} rounds", flush=True)
    runs["router_spooled"] = 0.0
    for round_ in range(WEBHOOK_ROUNDS):
        k = round_ % len(KINDS)
        for kind in KINDS[k:] + KINDS[:k]:
            with serving(env, kind) as s:
                for c in CLOSED_CONNECTIONS:
                    report = load(
                        env,
                        s,
                        twilio(env, SMALL_SET, next(seed)),
                        connections=c,
                        label=f"{kind}_{c}_{round_ + 1}",
                    )
                    runs.setdefault(f"{kind}_{c}_rounds", []).append(report)
                if round_ == WEBHOOK_ROUNDS - 1:
                    _last_round(env, runs, seed, s)
                if kind == "router":
                    runs["router_spooled"] += _spooled(s.ports[0])


def _last_round(env: Env, runs: dict[str, Any], seed: Iterator[int], s: Servers) -> None:
    """After a server's last closed-loop points: its points of median rate, then the ceiling's
    config lookups or the router's other points."""
    for c in CLOSED_CONNECTIONS:
        runs[f"{s.kind}_{c}"] = median_round(runs[f"{s.kind}_{c}_rounds"])
    if s.kind == "ceiling":
        runs["ceiling_config"] = load(
            env,
            s,
            {"kind": "config_const", "count": 1},
            expect=None,
            reuse=True,
            label="ceiling_config",
        )
    elif s.kind == "router":
        _router_extras(env, runs, seed, s)


def _router_extras(env: Env, runs: dict[str, Any], seed: Iterator[int], s: Servers) -> None:
    half = round(runs[f"router_{CLOSED_CONNECTIONS[0]}"]["achieved_rate"] / 2)
    runs["router_open"] = load(
        env, s, twilio(env, SMALL_SET, next(seed)), rate=half, label="router_open_half"
    )
    ids = asyncio.run(_recent_call_ids(env.database_url, CONFIG_LOOKUP_IDS))
    ids_file = env.workdir / "call_ids.txt"
    ids_file.write_text("\n".join(ids))
    runs["router_config"] = load(
        env,
        s,
        {
            "kind": "config",
            "token": env.runtime_token,
            "call_ids_file": str(ids_file),
            "seed": next(seed),
        },
        expect='"config"',
        reuse=True,
        label="router_config",
    )


def _large_set(env: Env, runs: dict[str, Any], seed: Iterator[int], rate: int) -> None:
    """1k and 100k channels on one freshly started worker, open loop at `rate`: all 100k
    routed once (closed loop), then LARGE_SET_ROUNDS rounds of one point of each set, the sets'
    order reversed every other round, so that neither set's points all come first or all
    follow the heavy closed loop."""
    print("1 worker, 1,000 vs 100,000 channels at the same arrival rate", flush=True)
    with serving(env, "router") as s:
        runs["router_large_startup_s"] = round(s.startup_s, 2)
        runs["router_large_rss_start_mb"] = round(procstat.rss_bytes(s.pids[0]) / 2**20, 1)
        print(
            f"  started in {runs['router_large_startup_s']} s, "
            f"RSS {runs['router_large_rss_start_mb']} MB",
            flush=True,
        )
        runs["router_large_closed"] = load(
            env, s, twilio(env, LARGE_SET, next(seed)), label="router_100k_closed"
        )
        sets = (("small", SMALL_SET, "1k"), ("large", LARGE_SET, "100k"))
        for name, _, _ in sets:
            runs[f"router_{name}_open"] = []
        for round_ in range(1, LARGE_SET_ROUNDS + 1):
            # Each set first in turn (ABA...), so that a drift of the machine within a round
            # does not always favour the same set.
            for name, size, label in sets if round_ % 2 else sets[::-1]:
                runs[f"router_{name}_open"].append(
                    load(
                        env,
                        s,
                        twilio(env, size, next(seed)),
                        rate=rate,
                        label=f"router_{label}_open_{round_}",
                    )
                )
        runs["router_large_rss_mb"] = round(procstat.rss_bytes(s.pids[0]) / 2**20, 1)
        runs["router_large_scrape"] = _scrape(s)
        runs["router_large_l1_hit_ratio"] = {
            kind: _l1_hit_ratio(s.ports[0], kind) for kind in ("routing", "version", "draft")
        }


def _propagation(env: Env, runs: dict[str, Any]) -> None:
    print("pin-change propagation, 2 workers", flush=True)
    with serving(env, "router", workers=2) as s:
        runs["propagation"] = asyncio.run(propagation(env, s))
        print(f"  {runs['propagation']}", flush=True)


def run_all(env: Env, groups: tuple[str, ...] = GROUPS, rate: int | None = None) -> dict[str, Any]:
    """Run the point `groups`; the large-set points' open-loop `rate` defaults to half the
    1-worker router's closed-loop rate."""
    runs: dict[str, Any] = {}
    seed = iter(range(1, 1000))
    if "webhooks" in groups:
        _webhooks(env, runs, seed)
    if "large" in groups:
        if rate is None:
            first = f"router_{CLOSED_CONNECTIONS[0]}"
            rate = round(runs[first]["achieved_rate"] / 2) if first in runs else 600
        _large_set(env, runs, seed, rate)
    if "propagation" in groups:
        _propagation(env, runs)
    return runs


# --- the table -----------------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def rounds_ratios(runs: dict[str, Any], kind: str, base: str, c: int) -> list[float]:
    """Each round's ratio of `kind`'s rate to `base`'s, at `c` connections."""
    return [
        _ratio(a["achieved_rate"], b["achieved_rate"])
        for a, b in zip(runs[f"{kind}_{c}_rounds"], runs[f"{base}_{c}_rounds"], strict=True)
    ]


def _spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def summary(runs: dict[str, Any]) -> list[list[str]]:
    """Rows of (measure, value, target, verdict)."""
    rows: list[list[str]] = []
    for c in CLOSED_CONNECTIONS:
        router, ceiling, naive = (runs[f"{k}_{c}"] for k in ("router", "ceiling", "naive"))
        vs_ceiling, vs_naive = (rounds_ratios(runs, "router", b, c) for b in ("ceiling", "naive"))
        want_ceiling = TARGETS.get(f"webhook_vs_ceiling_{c}", 0.0)
        want_naive = TARGETS[f"webhook_vs_naive_{c}"]
        rows.append(
            [
                f"webhook/s {c} conn, medians of {WEBHOOK_ROUNDS} rounds: router "
                f"{router['achieved_rate']:.0f} ({router.get('calls_per_batch')} a batch), "
                f"ceiling {ceiling['achieved_rate']:.0f}, naive {naive['achieved_rate']:.0f}",
                f"{statistics.median(vs_ceiling):.2f}x ceiling ({_spread(vs_ceiling)}), "
                f"{statistics.median(vs_naive):.2f}x naive ({_spread(vs_naive)})",
                (f">= {want_ceiling}x ceiling, " if want_ceiling else "")
                + f">= {want_naive}x naive",
                _verdict(
                    statistics.median(vs_ceiling) >= want_ceiling
                    and statistics.median(vs_naive) >= want_naive
                ),
            ]
        )
    c = CLOSED_CONNECTIONS[0]
    router, ceiling = runs[f"router_{c}"], runs[f"ceiling_{c}"]
    cpu, db, naive_cpu, naive_db, bare = (
        statistics.median(r[figure] for r in runs[f"{kind}_{c}_rounds"])
        for kind, figure in (
            ("router", "server_cpu_us_per_call"),
            ("router", "db_cpu_us_per_call"),
            ("naive", "server_cpu_us_per_call"),
            ("naive", "db_cpu_us_per_call"),
            ("ceiling", "server_cpu_us_per_call"),
        )
    )
    rows.append(
        [
            f"CPU per call {c} conn, medians of {WEBHOOK_ROUNDS} rounds, router (naive); "
            f"speed probe {_probe_ms(router)} ms (ceiling's {_probe_ms(ceiling)})",
            f"router {cpu:.0f} us ({naive_cpu:.0f}), Postgres {db:.0f} us ({naive_db:.0f}); "
            f"{_ratio(cpu, bare):.1f}x, {_ratio(db, bare):.1f}x the ceiling's {bare:.0f} us",
            f"router <= {TARGETS['router_cpu_us_per_call']:.0f} us, "
            f"Postgres <= {TARGETS['db_cpu_us_per_call']:.0f} us",
            _verdict(
                cpu <= TARGETS["router_cpu_us_per_call"] and db <= TARGETS["db_cpu_us_per_call"]
            ),
        ]
    )
    spooled = runs["router_spooled"]
    rows.append(
        [
            "calls spooled during the router's points",
            f"{spooled:.0f}",
            "0 (else they measured the spool)",
            _verdict(spooled == 0),
        ]
    )
    o = runs["router_open"]
    lat, seconds = o["latency_ms"], o["p99_ms_by_second"]
    rows.append(
        [
            f"open loop at {o['offered_rate']:.0f}/s (half max)",
            f"p50 {lat['p50']:.1f} p99 {lat['p99']:.1f} p99.9 {lat['p99_9']:.1f} ms, "
            f"{o['errors']} errors; p99 of each second: median {statistics.median(seconds):.1f}, "
            f"worst {max(seconds):.1f} ms; commits over "
            + ", ".join(f"{ms} ms: {n:.0f}" for ms, n in o["commits_over_ms"].items())
            + f"; {_open_tail(o)}"
            + f"; checkpointer ran {o['checkpointer']['run_ms']:.0f} ms"
            + (", a checkpoint completed" if o["checkpointer"]["completed"] else ""),
            f"p99 <= {TARGETS['open_loop_p99_ms']:.0f} ms, no errors",
            _verdict(lat["p99"] <= TARGETS["open_loop_p99_ms"] and o["errors"] == 0),
        ]
    )
    small, large = (
        statistics.median(r["latency_ms"]["p50"] for r in runs[f"router_{name}_open"])
        for name in ("small", "large")
    )
    offered = runs["router_large_open"][0]["offered_rate"]
    rows.append(
        [
            f"p50 100k vs 1k channels at {offered:.0f}/s ({LARGE_SET_ROUNDS} rounds, medians)",
            f"{large:.2f} vs {small:.2f} ms = {_ratio(large, small):.2f}x",
            "<= 1.10x",
            _verdict(_ratio(large, small) <= TARGETS["large_set_p50_ratio"]),
        ]
    )
    cfg, cfg_ceiling = (runs[k]["achieved_rate"] for k in ("router_config", "ceiling_config"))
    rows.append(
        [
            f"config lookup/s: router {cfg:.0f}, ceiling {cfg_ceiling:.0f}",
            f"{_ratio(cfg, cfg_ceiling):.2f}x ceiling",
            f">= {TARGETS['config_vs_ceiling']}x ceiling",
            _verdict(_ratio(cfg, cfg_ceiling) >= TARGETS["config_vs_ceiling"]),
        ]
    )
    p = runs["propagation"]
    served = p["served_ms"]
    rows.append(
        [
            f"pin-change propagation ({p['changes']} changes, {p['workers']} workers)",
            f"p50 {served.get('p50', 0):.1f} p99 {served.get('p99', 0):.1f} ms, {p['lost']} lost",
            "p99 <= 100 ms",
            _verdict(p["lost"] == 0 and served.get("p99", 1e9) <= TARGETS["propagation_p99_ms"]),
        ]
    )
    rss = runs["router_large_rss_mb"]
    rows.append(
        [
            "worker RSS after 100k channels",
            f"{rss:.0f} MB (L1 hit ratio routing {runs['router_large_l1_hit_ratio']['routing']})",
            "< 300 MB holding 100k channels",
            _verdict(rss < TARGETS["rss_mb"]),
        ]
    )
    sc = runs["router_large_scrape"]
    rows.append(
        [
            f"a scrape of /metrics after 100k channels (median of {SCRAPES})",
            f"{sc['ms']:.1f} ms (router CPU {sc['router_cpu_ms']:.0f} ms), {sc['samples']:.0f}"
            f" samples, {sc['bytes'] / 1e6:.1f} MB",
            f"<= {TARGETS['scrape_ms']:.0f} ms",
            _verdict(sc["ms"] <= TARGETS["scrape_ms"]),
        ]
    )
    return rows


def render(rows: list[list[str]]) -> str:
    head = ["measure", "result", "target", ""]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), line]
    out += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def _arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS,
        help="run only these groups of points; prints them and saves nothing (no table)",
    )
    parser.add_argument(
        "--rate", type=int, help="open-loop calls/s of the large-set points (with --only)"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = _arguments(argv)
    started = time.monotonic()
    machine = procstat.machine()
    print(f"machine: {machine}", flush=True)
    # The admin service runs throughout, as deployed: its compaction folds the calls the
    # routers record into the rollups every second, and its backend's CPU counts with theirs.
    with scratch_env() as env, serving(env, "admin"):
        runs = run_all(env, tuple(args.only or GROUPS), args.rate)
    if args.only:
        print(json.dumps(runs.get("router_large_l1_hit_ratio")))
        return 0
    rows = summary(runs)
    table = render(rows)
    print()
    print(table)
    elapsed = time.monotonic() - started
    print(f"\nbench took {elapsed:.0f} s", flush=True)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"bench-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "machine": machine,
                "load_average_at_end": list(os.getloadavg()),
                "elapsed_s": round(elapsed, 1),
                "targets": TARGETS,
                "table": rows,
                "runs": runs,
            },
            indent=2,
        )
    )
    (RESULTS / "latest.txt").write_text(f"{stamp}\n{machine}\n\n{table}\n")
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

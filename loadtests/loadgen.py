"""The load generator: `python -m loadtests.loadgen SPEC.json OUT.json`, in a process of its own.

Every request is built (and signed) before the timed window. Two modes:

- closed loop: each connection sends its next request when the last answer arrives (maximum
  throughput);
- open loop: request i is due at start + i / rate whatever happened before it, and its latency is
  measured from that intended time, so a stall delays (and is charged to) every request due
  during it: coordinated omission cannot hide it. Timers have 1 ms resolution: a send may leave
  up to 1 ms early or late, and that is counted too (the report's `send_late_ms`).

A request's latency ends when its answer's last byte is read (loadtests/httpclient.py).

With `metrics`, the servers' /metrics pages are read half a second before the window and again
right after it (the report's `metrics_pages`): what the servers count of their own work then
leaves out the warm-up, whose first moments follow the bench's checkpoint.

The report gives offered and achieved rates, errors, latency percentiles, the CPU seconds of
the server processes, of the database backends serving them and of this generator in the window,
and the WAL the database server wrote in it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import random
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import uvloop

from loadtests import procstat, workload
from loadtests.httpclient import Connection, Response, build_request

# Bytes. A webhook answer that lacks this is the fallback, not a routed call.
ROUTED_MARK = "<Stream"
# Requests built for a closed-loop run when the spec does not say: above any rate this stack
# reaches on two cores for the default 12 s.
DEFAULT_CLOSED_REQUESTS = 200_000
# Seconds a request may take before it counts as an error (and its connection is replaced).
REQUEST_TIMEOUT_S = 10.0
# Seconds before the window that the servers' /metrics pages are read: the requests a page's
# rendering held (up to 15 ms of them after 100,000 channels) are answered before the window.
METRICS_LEAD_S = 0.5


@dataclass
class Spec:
    """What to send, where and how (the JSON file's fields)."""

    mode: str  # closed | open
    targets: list[tuple[str, int]]
    connections: int
    duration_s: float
    warmup_s: float
    requests: dict[str, Any]
    rate: float | None = None
    expect: str | None = None
    reuse: bool = False
    server_pids: list[int] = field(default_factory=list)
    # The servers' database: the CPU of its client backends is theirs.
    database_url: str | None = None
    max_requests: int = DEFAULT_CLOSED_REQUESTS
    # Read the servers' /metrics pages around the window.
    metrics: bool = False

    @classmethod
    def load(cls, raw: dict[str, Any]) -> Spec:
        raw = dict(raw)
        raw["targets"] = [(str(h), int(p)) for h, p in raw["targets"]]
        return cls(**raw)


def _build(spec: Spec, count: int) -> list[bytes]:
    r = spec.requests
    if r["kind"] == "twilio":
        return workload.twilio_requests(r["token"], int(r["channels"]), count, int(r["seed"]))
    if r["kind"] == "config":
        ids = Path(r["call_ids_file"]).read_text().split()
        random.Random(int(r["seed"])).shuffle(ids)
        return workload.config_requests(r["token"], ids)
    if r["kind"] == "config_const":
        ids = [f"call_{secrets.token_hex(12)}" for _ in range(int(r["count"]))]
        return workload.config_requests("-", ids)
    raise ValueError(f"unknown request kind {r['kind']}")


def percentiles(latencies: list[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/max in milliseconds (nearest rank)."""
    if not latencies:
        return {}
    ordered = sorted(latencies)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] * 1000

    return {
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "p99_9": rank(0.999),
        "max": ordered[-1] * 1000,
        "mean": sum(ordered) / len(ordered) * 1000,
    }


# (intended or sent time, done time, ok) of a finished request.
Done = tuple[float, float, bool]


class Run:
    """One measurement: the requests, the outcome of each, the accounting around the window."""

    def __init__(self, spec: Spec, requests: list[bytes], started_file: Path | None = None) -> None:
        self.spec = spec
        self.started_file = started_file
        self.requests = requests
        self.expect = spec.expect.encode() if spec.expect else None
        self.next = 0
        self.done: list[Done] = []
        # Open loop: (intended time, seconds the send left after it) of each request sent.
        self.late: list[tuple[float, float]] = []
        self.errors: dict[str, int] = {}
        self.exhausted = False

    def ticket(self) -> int | None:
        i = self.next
        if i >= len(self.requests) and not self.spec.reuse:
            self.exhausted = True
            return None
        self.next = i + 1
        return i

    def judge(self, response: Response) -> bool:
        if response.status != 200:
            key = f"http_{response.status}"
        elif self.expect is not None and self.expect not in response.body:
            key = "unexpected_answer"
        else:
            return True
        self.errors[key] = self.errors.get(key, 0) + 1
        return False

    def failed(self, exc: BaseException) -> None:
        key = type(exc).__name__
        self.errors[key] = self.errors.get(key, 0) + 1


async def _connect(spec: Spec, n: int) -> Connection:
    host, port = spec.targets[n % len(spec.targets)]
    return await Connection.open(host, port)


async def _worker(run: Run, n: int, start: float, stop: float) -> None:
    spec = run.spec
    conn = await _connect(spec, n)
    rate = spec.rate
    try:
        while True:
            i = run.ticket()
            if i is None:
                return
            if rate is not None:
                intended = start + i / rate
                if intended >= stop:
                    return
                delay = intended - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                intended = time.perf_counter()
                if intended >= stop:
                    return
            if rate is not None:
                run.late.append((intended, time.perf_counter() - intended))
            try:
                response = await asyncio.wait_for(
                    conn.request(run.requests[i % len(run.requests)]), REQUEST_TIMEOUT_S
                )
            # Whatever went wrong is counted; the connection is replaced and the load goes on.
            except Exception as exc:
                run.failed(exc)
                run.done.append((intended, time.perf_counter(), False))
                conn.close()
                conn = await _connect(spec, n)
                continue
            run.done.append((intended, response.at, run.judge(response)))
    finally:
        conn.close()


@dataclass
class Snapshot:
    at: float
    server_cpu: dict[int, float]
    server_wait: float
    db_cpu: dict[int, float]
    wal: int  # bytes of WAL the server has written (the whole server's: nothing else writes)
    client_cpu: float


# What the database tells at each reading of a window: its client backends (not an autovacuum
# worker at work on it; this generator's own connection left out), listed anew each time as a
# pool may close a connection and open another within a point; and the WAL's insert position,
# in bytes from its start.
DATABASE_READING = """
SELECT array(SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()
               AND backend_type = 'client backend'),
       pg_current_wal_insert_lsn() - '0/0'
"""


async def _snapshot(run: Run, db: asyncpg.Connection | None) -> Snapshot:
    backends, wal = await db.fetchrow(DATABASE_READING) if db is not None else ([], 0)
    return Snapshot(
        time.perf_counter(),
        procstat.cpu_by_pid(run.spec.server_pids),
        sum(procstat.wait_seconds(pid) for pid in run.spec.server_pids),
        procstat.cpu_by_pid(backends),
        int(wal),
        time.process_time(),
    )


async def _metrics_pages(spec: Spec) -> list[str]:
    """Each target's /metrics page, read on a connection of its own."""
    pages = []
    for host, port in spec.targets:
        conn = await Connection.open(host, port)
        try:
            get = conn.request(build_request("GET", "/metrics", host, {}))
            pages.append((await asyncio.wait_for(get, REQUEST_TIMEOUT_S)).body.decode())
        finally:
            conn.close()
    return pages


async def _measure(run: Run) -> dict[str, Any]:
    spec = run.spec
    # uvloop's loop.time() moves in whole milliseconds: every stamp is taken with perf_counter.
    # The first open-loop request is due once every worker is set.
    start = time.perf_counter() + 0.05
    window_start, stop = start + spec.warmup_s, start + spec.warmup_s + spec.duration_s
    db = await asyncpg.connect(spec.database_url) if spec.database_url else None
    workers = [asyncio.ensure_future(_worker(run, n, start, stop)) for n in range(spec.connections)]
    if spec.metrics:
        await asyncio.sleep(max(0.0, window_start - METRICS_LEAD_S - time.perf_counter()))
        pages_before = await _metrics_pages(spec)
    await asyncio.sleep(max(0.0, window_start - time.perf_counter()))
    first = await _snapshot(run, db)
    window_started_at = time.time()
    if run.started_file is not None:
        run.started_file.touch()  # for a profiler to attach to the server now
    finished = asyncio.gather(*workers)
    # Closed loop: the window ends at `stop` or when the requests run out.
    while not finished.done() and time.perf_counter() < stop:
        await asyncio.wait([finished], timeout=min(0.05, max(0.0, stop - time.perf_counter())))
    last = await _snapshot(run, db)
    pages = [pages_before, await _metrics_pages(spec)] if spec.metrics else None
    if db is not None:
        await db.close()
    await asyncio.wait_for(finished, REQUEST_TIMEOUT_S + 1)
    report = _report(run, first, last)
    # Wall-clock, for what other processes timed in the window (loadtests/speed.py).
    report["window_started_at"] = window_started_at
    if pages is not None:
        report["metrics_pages"] = pages
    return report


def _report(run: Run, first: Snapshot, last: Snapshot) -> dict[str, Any]:
    spec = run.spec
    window = last.at - first.at
    if spec.rate is not None:
        # Open loop: judge every request due in the window, whenever it finished.
        measured = [d for d in run.done if first.at <= d[0] < last.at]
    else:
        measured = [d for d in run.done if first.at <= d[1] < last.at]
    ok = [done - sent for sent, done, good in measured if good]
    completed = len(ok)
    server_cpu = procstat.cpu_spent(first.server_cpu, last.server_cpu)
    db_cpu = procstat.cpu_spent(first.db_cpu, last.db_cpu)
    client_cpu = last.client_cpu - first.client_cpu
    cpus = os.cpu_count() or 1
    per_call = 1e6 / completed if completed else 0.0
    return {
        "mode": spec.mode,
        "connections": spec.connections,
        "targets": len(spec.targets),
        "window_s": round(window, 3),
        "offered_rate": spec.rate,
        "achieved_rate": round(completed / window, 1) if window > 0 else 0.0,
        "completed": completed,
        "errors": sum(1 for *_, good in measured if not good),
        "error_kinds": dict(run.errors),
        "exhausted_requests": run.exhausted,
        "latency_ms": {k: round(v, 3) for k, v in percentiles(ok).items()},
        "p99_ms_by_second": _p99_by_second(measured, first.at, spec.rate is not None),
        # Open loop: how late this generator sent the requests due in the window (its timers
        # fire on whole milliseconds, and its process waits for a CPU like the servers'), a
        # part of their latencies that no server caused.
        "send_late_ms": {
            k: round(v, 3)
            for k, v in percentiles([s for at, s in run.late if first.at <= at < last.at]).items()
        },
        "server_cpu_s": round(server_cpu, 2),
        "server_cpu_us_per_call": round(server_cpu * per_call, 1),
        # Runnable but off the CPU: the open loop's tail follows it (loadtests/README.md).
        "server_wait_us_per_call": round((last.server_wait - first.server_wait) * per_call, 1),
        "db_cpu_us_per_call": round(db_cpu * per_call, 1),
        # Backends that exited within the window: their CPU in it is not counted.
        "db_backends_gone": len(first.db_cpu.keys() - last.db_cpu.keys()),
        "db_backends_new": len(last.db_cpu.keys() - first.db_cpu.keys()),
        "wal_bytes_per_call": round((last.wal - first.wal) / completed) if completed else 0,
        "client_cpu_s": round(client_cpu, 2),
        "client_cpu_share_of_machine": round(client_cpu / (window * cpus), 3) if window else 0,
        "client_cpu_us_per_call": round(client_cpu * per_call, 1),
        "server_rss_mb": [round(procstat.rss_bytes(p) / 2**20, 1) for p in spec.server_pids],
    }


def _p99_by_second(measured: list[Done], start: float, open_loop: bool) -> list[float]:
    """The p99 of each whole second of the window (requests due in it in the open loop,
    finished in it in the closed loop): whether a tail is spread over the run or comes from a
    few bad seconds."""
    seconds: dict[int, list[float]] = {}
    for sent, done, good in measured:
        if good:
            at = sent if open_loop else done
            seconds.setdefault(int(at - start), []).append(done - sent)
    return [round(percentiles(seconds[s])["p99"], 2) for s in sorted(seconds)]


def run_spec(spec: Spec, started_file: Path | None = None) -> dict[str, Any]:
    """Build the requests, then measure (on uvloop when installed)."""
    if spec.rate is not None:
        count = math.ceil(spec.rate * (spec.warmup_s + spec.duration_s)) + 1
    else:
        count = spec.max_requests
    built = time.perf_counter()
    requests = _build(spec, count)
    build_s = time.perf_counter() - built
    # The generator's own pauses would be charged to the servers: a young collection of its
    # garbage took up to 5 ms, an older one 7, holding the sends due and the stamps of the answers
    # arriving meanwhile, and releasing them as a burst (loadtests/README.md, "The load
    # generator's collector"). What it allocates while measuring forms no reference cycles, so
    # reference counting frees it all: the collector is off for the run, and what was built
    # before it frozen out of every collection.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        report: dict[str, Any] = uvloop.run(_measure(Run(spec, requests, started_file)))
    finally:
        gc.enable()
    # What the collector being off kept: the objects in cycles the run left, none if it made none.
    report["cyclic_garbage_objects"] = gc.collect()
    report["requests_built"] = len(requests)
    report["build_s"] = round(build_s, 2)
    return report


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m loadtests.loadgen SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = Spec.load(json.loads(Path(argv[0]).read_text()))
    out = Path(argv[1])
    out.write_text(json.dumps(run_spec(spec, out.with_suffix(".measuring")), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

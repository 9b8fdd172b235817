"""The group-commit writer's own cost per call: router/recorder.py's CallWriter alone in one
process on uvloop, against the real Postgres, calls arriving at fixed rates as the open loop of
`make bench` sends them (where each call is nearly its own batch).

`python -m loadtests.writer_bench --tree before=HEAD~1 --tree after=.`: each `--tree` is a git
revision exported to a scratch directory (`.` is the working tree as it is), and each
measurement runs in a process of its own whose `router` and `store` are that tree's. The trees
take turns within every round, in the opposite order every other round, so that a change in the
machine's load touches them alike. One database serves every run: seeded once (1,000 channels
of 50 agents, two variants each), and migrated by the tree this module is run from.

A run offers `--rate` calls a second for `--duration` seconds after a warm-up, each call at its
intended time; its latency runs from that time to `record` returning (no coordinated omission).
It reports the process's CPU per call (getrusage: the writer, the event loop, asyncpg, and the
load's own making of calls and tasks, the same for every tree), the same less what offering
calls to a `record` that does nothing costs (measured first, at the same rate) per call and per
batch, its Postgres backends' CPU per call and per batch (from /proc, so Postgres must run on
this machine), the event loop's time runnable but off the CPU, the record latency and the calls
per batch. A change to the writer's cost per batch also moves the batch sizes (a quicker turn
gathers fewer calls), and with them both CPUs per call: compare per batch too. Each run
prints a JSON line; the summary gives per rate and tree the median of each figure over the
rounds, its spread (min and max), and its ratio to the first tree's median.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import os
import random
import resource
import secrets
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Figures the summary compares across trees.
FIGURES = (
    "cpu_us_per_call",
    "writer_cpu_us_per_call",
    "writer_cpu_us_per_batch",
    "postgres_us_per_call",
    "postgres_us_per_batch",
    "loop_waited_us_per_call",
    "p50_ms",
    "p99_ms",
    "calls_per_batch",
)
CHANNELS = 1000
AGENTS = 50
# One call in this many remembers its caller, as the bench's A/B channels' 15% do.
STICKY_ONE_IN = 7
CALLERS = 50_000
ROOT = Path(__file__).resolve().parent.parent


async def offer(
    rate: float, duration_s: float, record: Callable[[], Awaitable[object]]
) -> list[float]:
    """Start `record()` `rate` times a second for `duration_s` seconds, each as a task of its
    own at its intended time (all those overdue at once after a late wake-up); the seconds from
    each intended time to its return, in order of intended time. A call that raised counts as
    NaN."""
    loop = asyncio.get_running_loop()

    async def timed(due: float) -> float:
        try:
            await record()
        except Exception:
            return float("nan")
        return time.perf_counter() - due

    tasks: list[asyncio.Task[float]] = []
    start = time.perf_counter()
    for i in range(round(rate * duration_s)):
        due = start + i / rate
        ahead = due - time.perf_counter()
        if ahead > 0:
            await asyncio.sleep(ahead)
        tasks.append(loop.create_task(timed(due)))
    return list(await asyncio.gather(*tasks))


def cpu_seconds() -> float:
    """This process's CPU time so far (user and system, every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _nothing() -> None:
    await asyncio.sleep(0)


async def offer_cost(rate: float, duration_s: float) -> float:
    """The CPU seconds a call of `offer`'s own costs at `rate`, with a `record` that does
    nothing: the timers, the tasks and their wake-ups."""
    calls = round(rate * duration_s)
    before = cpu_seconds()
    await offer(rate, duration_s, _nothing)
    return (cpu_seconds() - before) / calls


def percentile(sorted_values: Sequence[float], share: float) -> float:
    """The value `share` of the way up `sorted_values` (nearest rank)."""
    return sorted_values[min(len(sorted_values) - 1, int(share * len(sorted_values)))]


def summarize(runs: list[dict[str, Any]], trees: list[str]) -> list[dict[str, Any]]:
    """Per rate and tree: each figure's median over the runs, min and max, and the median's
    ratio to the first tree's at the same rate."""
    rows = []
    for rate in sorted({run["rate"] for run in runs}):
        medians: dict[str, float] = {}
        for tree in trees:
            mine = [run for run in runs if run["rate"] == rate and run["tree"] == tree]
            row: dict[str, Any] = {"rate": rate, "tree": tree, "runs": len(mine)}
            for figure in FIGURES:
                values = [run[figure] for run in mine]
                median = statistics.median(values)
                medians.setdefault(figure, median)
                row[figure] = {
                    "median": round(median, 2),
                    "min": round(min(values), 2),
                    "max": round(max(values), 2),
                    "to_first": round(median / medians[figure], 3) if medians[figure] else None,
                }
            rows.append(row)
    return rows


# --- one run, in a process whose `router` and `store` are the tree's under test ---


def schedstat(pid: int | str) -> tuple[float, float]:
    """Seconds `pid` (its main thread) has run on a CPU, and waited runnable for one, to the
    nanosecond (zeros once it is gone). This module reads /proc itself: the tree under test
    may predate loadtests/procstat.py's helpers."""
    try:
        ran, waited = Path(f"/proc/{pid}/schedstat").read_text().split()[:2]
    except OSError:
        return 0.0, 0.0
    return int(ran) / 1e9, int(waited) / 1e9


async def _run(spec: dict[str, Any]) -> dict[str, Any]:
    from router.__main__ import GC_THRESHOLDS
    from router.metrics import RouterMetrics
    from router.recorder import CallWriter
    from router.spool import Spool
    from store.calls import Candidate, NewCall
    from store.db import PostgresGuard, create_pool

    offered = [tuple(Candidate(**c) for c in pair) for pair in spec["candidates"]]
    started = datetime.now(UTC)
    draws = random.Random(spec["seed"])

    def new_call() -> NewCall:
        k = draws.randrange(CHANNELS)
        sid = "CA" + secrets.token_hex(16)
        return NewCall(
            call_id="call_" + secrets.token_hex(12),
            provider="twilio",
            provider_call_id=sid,
            channel=f"+1415555{k:04d}",
            from_number=f"+1415{draws.randrange(CALLERS):07d}",
            routing_revision=1,
            started_at=started,
            drawn=draws.choice("ab"),
            remember=draws.randrange(STICKY_ONE_IN) == 0,
            candidates=offered[k % len(offered)],
        )

    gc.set_threshold(*GC_THRESHOLDS)
    pool = await create_pool(spec["url"])
    metrics = RouterMetrics()
    with tempfile.TemporaryDirectory() as spool_dir:
        spool = Spool(Path(spool_dir))
        spool.open()
        writer = CallWriter(pool, spool, PostgresGuard(), metrics)
        running = asyncio.create_task(writer.run())
        try:
            idle = await offer_cost(spec["rate"], spec["warmup_s"])
            await offer(spec["rate"], spec["warmup_s"], lambda: writer.record(new_call()))
            # As the router's warm-up does: what was loaded is frozen out of the collector.
            gc.collect()
            gc.freeze()
            backends = await pool.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            )
            pids = [r["pid"] for r in backends]
            batches_before = _batches(metrics)
            pg_before = [schedstat(pid)[0] for pid in pids]
            waited = schedstat("self")[1]
            cpu = cpu_seconds()
            latencies = await offer(
                spec["rate"], spec["duration_s"], lambda: writer.record(new_call())
            )
            cpu = cpu_seconds() - cpu
            waited = schedstat("self")[1] - waited
            pg_after = [schedstat(pid)[0] for pid in pids]
            batches = _batches(metrics) - batches_before
            spooled = writer.spooled
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await pool.close()
            spool.close()
    postgres = sum(pg_after) - sum(pg_before)
    done = sorted(x for x in latencies if x == x)
    calls = len(latencies)
    return {
        "rate": spec["rate"],
        "calls": calls,
        "errors": calls - len(done),
        "spooled": spooled,
        "batches": batches,
        "calls_per_batch": round(calls / batches, 2),
        "cpu_us_per_call": round(cpu / calls * 1e6, 1),
        # Less what offering the calls costs alone (an estimate: with the writer running, some
        # of the loop's wake-ups serve both).
        "writer_cpu_us_per_call": round((cpu / calls - idle) * 1e6, 1),
        "writer_cpu_us_per_batch": round((cpu - idle * calls) / batches * 1e6, 1),
        "postgres_us_per_call": round(postgres / calls * 1e6, 1),
        "postgres_us_per_batch": round(postgres / batches * 1e6, 1),
        # The event loop runnable but off the CPU: behind Postgres' backend or anything else.
        "loop_waited_us_per_call": round(waited / calls * 1e6, 1),
        "p50_ms": round(percentile(done, 0.5) * 1e3, 2),
        "p99_ms": round(percentile(done, 0.99) * 1e3, 2),
        "p999_ms": round(percentile(done, 0.999) * 1e3, 2),
        "max_ms": round(done[-1] * 1e3, 2),
    }


def _batches(metrics: Any) -> float:
    """Batches the writer has committed or spooled, from its batch-size histogram."""
    for family in metrics.batch_size.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                return float(sample.value)
    return 0.0


def child(spec: dict[str, Any]) -> None:
    import uvloop

    found = uvloop.run(_run(spec))
    print(json.dumps(found), flush=True)


# --- the rounds, in the process the command started ---


def export(revision: str, into: Path) -> Path:
    """The tree at `revision` as files under `into`; `.` is this checkout as it is."""
    if revision == ".":
        return ROOT
    archive = subprocess.run(  # noqa: S603 (fixed command, a revision as its argument)
        ["git", "-C", str(ROOT), "archive", "--format=tar", revision],  # noqa: S607
        capture_output=True,
        check=True,
    ).stdout
    target = into / revision.replace("/", "_")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def measure_in(tree: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """One run in a process of its own, importing the writer from `tree`."""
    # Run by its path, as the tree may predate this module; everything it imports is the tree's.
    env = os.environ | {"PYTHONPATH": str(tree)}
    out = subprocess.run(  # noqa: S603 (this interpreter, this file)
        [sys.executable, __file__, "--child", json.dumps(spec)],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, Any] = json.loads(out.splitlines()[-1])
    return found


async def _seed(url: str) -> list[list[dict[str, Any]]]:
    """Channels, and per agent the two candidates its channels offer, as JSON."""
    from loadtests.record_cost import ADD_CHANNELS, _candidates
    from store.db import create_pool

    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        offered = await _candidates(pool, AGENTS)
        await pool.execute(ADD_CHANNELS, CHANNELS)
    finally:
        await pool.close()
    return [[c._asdict() for c in pair] for pair in offered]


async def rounds(args: argparse.Namespace) -> None:
    from harness.postgres import scratch_database
    from loadtests.procstat import machine
    from store.settings import DEFAULT_DATABASE_URL

    server = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    named = [tuple(t.split("=", 1)) for t in args.tree] or [("tree", ".")]
    print(json.dumps({"machine": machine(), "trees": dict(named)}), flush=True)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        trees = {name: export(rev, Path(scratch)) for name, rev in named}
        async with scratch_database(server, "writer_bench") as url:
            candidates = await _seed(url)
            for n in range(args.rounds):
                order = list(trees) if n % 2 == 0 else list(reversed(trees))
                for rate in args.rates:
                    for name in order:
                        spec = {
                            "url": url,
                            "rate": rate,
                            "duration_s": args.duration,
                            "warmup_s": args.warmup,
                            "candidates": candidates,
                            "seed": n,
                        }
                        found = {"round": n, "tree": name} | await asyncio.to_thread(
                            measure_in, trees[name], spec
                        )
                        print(json.dumps(found), flush=True)
                        runs.append(found)
    for row in summarize(runs, list(trees)):
        print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=REVISION, or NAME=.")
    parser.add_argument("--rates", type=float, nargs="+", default=[500, 1500])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
    else:
        asyncio.run(rounds(args))


if __name__ == "__main__":
    main()

"""The benchmark's fast request builder and the router's templated TwiML agree byte for byte
with the slow, obviously right versions they replace; the writer benchmark's open loop charges
each call from its intended time, and its summary compares trees by their medians."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qsl

import asyncpg
import pytest

from loadtests import (
    bench,
    loadgen,
    procstat,
    profile_buckets,
    record_cost,
    speed,
    workload,
    writer_bench,
)
from router import providers, signatures
from router.metrics import RouterMetrics
from store.calls import CallRecord
from store.settings import DEFAULT_DATABASE_URL
from tests.call_rows import RECORDED_CALL


def test_batch_requests_match_the_signed_reference_and_verify() -> None:
    batch = workload.TwilioBatch("secret-token")
    raw = batch.request("CA0123", "+15550000042", "+12120000007")
    assert raw == workload.twilio_request("secret-token", "+15550000042", "+12120000007", "CA0123")
    head, _, body = raw.partition(b"\r\n\r\n")
    header = next(h for h in head.split(b"\r\n") if h.startswith(b"X-Twilio-Signature: "))
    reason = signatures.verify_twilio(
        "secret-token",
        workload.PUBLIC_BASE_URL + workload.TWILIO_VOICE_PATH,
        parse_qsl(body.decode(), keep_blank_values=True),
        header.split(b": ", 1)[1].decode(),
    )
    assert reason is None


def _reference_twiml(stream_url: str, call: CallRecord) -> str:
    response = ET.Element("Response")
    stream = ET.SubElement(ET.SubElement(response, "Connect"), "Stream", url=stream_url)
    for name, value in providers.stream_parameters(call).items():
        ET.SubElement(stream, "Parameter", name=name, value=value)
    return providers.XML_DECLARATION + ET.tostring(response, encoding="unicode")


@pytest.mark.parametrize(
    "agent_id", ["agt_0123456789abcdef", 'a"b<c>&d', "tab\there\nline\rfeed", "'quote' é ☎"]
)
def test_templated_twiml_is_what_elementtree_writes(agent_id: str) -> None:
    call = RECORDED_CALL._replace(agent_id=agent_id)
    url = "wss://media.example.com/a&b"
    assert providers.twiml_stream(url, call) == _reference_twiml(url, call)


def test_a_profile_sample_goes_to_the_innermost_part_its_frames_name() -> None:
    raw = [
        "run (asyncio/runners.py:118);twilio_voice (router/webhooks.py:113);"
        "verify_twilio (router/signatures.py:95);_hmac (hmac.py:1) 3",
        "run (asyncio/runners.py:118);twilio_voice (router/webhooks.py:113);"
        "write_eof (aiohttp/http_writer.py:314) 2",
        "_commit (router/recorder.py:237);_do_execute (asyncpg/connection.py:2066) 4",
        "run (asyncio/runners.py:118) 1",
        "somewhere (elsewhere.py:1) 1",
        # py-spy --native: the compiled modules' C functions, and an idle executor thread.
        "run (uvloop/__init__.py:92);CPyDef_webhooks___twilio_voice_lane_gen (__native.c:1);"
        "CPyDef_signatures___verify_twilio (__native.c:2);HMAC.copy (hmac.py:1) 5",
        "run (uvloop/__init__.py:92);CPyDef_fastlane____serve__Connection_gen (__native.c:3);"
        "write (libc.so.6) 6",
        "_worker (concurrent/futures/thread.py:81);PyThread_acquire_lock_timed (libpython.so) 7",
    ]

    assert profile_buckets.buckets(raw) == {
        "signature check (HMAC-SHA1 over the sorted fields)": 3 + 5,
        "fast lane: HTTP parsing and the answer's write": 6,
        "response building and writing (aiohttp)": 2,
        "record: writer, batch columns, asyncpg": 4,
        "event loop (uvloop, asyncio)": 1,
        profile_buckets.OTHER: 1,
    }


def test_a_batch_cost_splits_into_a_fixed_part_and_a_part_per_call() -> None:
    # 400 µs a batch plus 30 a call, given as µs a call at each size.
    measured = {n: (400 + 30 * n) / n for n in (1, 15, 100)}

    assert record_cost.fixed_and_per_call(measured) == {
        "fixed_us_per_batch": 400.0,
        "us_per_call": 30.0,
    }


def test_the_table_compares_servers_round_by_round_and_takes_the_medians() -> None:
    """A round's router against the same round's ceiling: a drift of the machine between rounds
    moves both. The point shown is its round of median rate."""
    rates = {"router": [600, 900, 700], "ceiling": [2000, 3000, 2800]}
    runs = {
        f"{kind}_32_rounds": [{"achieved_rate": r} for r in rounds]
        for kind, rounds in rates.items()
    }

    assert bench.rounds_ratios(runs, "router", "ceiling", 32) == [0.3, 0.3, 0.25]
    assert bench.median_round(runs["router_32_rounds"]) == {"achieved_rate": 700}
    assert bench.median_round(runs["ceiling_32_rounds"][:2]) == {"achieved_rate": 3000}


async def test_record_cost_variants_take_turns_each_in_a_database_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    small = record_cost.Variant(channels=3, agents=1)
    turns: list[tuple[str, int]] = []
    record = record_cost.Subject.record

    async def logged(subject: record_cost.Subject, n: int, size: int) -> float:
        turns.append((subject.variant.setup[0] if subject.variant.setup else "as is", n))
        return await record(subject, n, size)

    monkeypatch.setattr(record_cost.Subject, "record", logged)
    variants = {
        "as is": replace(small, explain=True),
        "in transaction": replace(small, setup=record_cost.ROLLUPS_IN_TRANSACTION),
    }

    found = await record_cost.measure(server, variants, 3, 4)

    # Ten warm-up batches, then three measured, every variant once a batch, the first rotating.
    off = record_cost.ROLLUPS_IN_TRANSACTION[0]
    assert turns[-6:] == [("as is", 0), (off, 0), (off, 1), ("as is", 1), ("as is", 2), (off, 2)]
    assert len(turns) == 2 * 13
    for name, report in found.items():
        assert report["rows"] == 13 * 4  # every call recorded, in its variant's own database
        assert report["calls"] == 12 and report["postgres_cpu_us_per_call"] > 0
        assert report["wal_bytes_per_call"] > 0
        assert report["generic_plans"] + report["custom_plans"] == 13
        assert ("explain" in report) == (name == "as is")


async def test_record_cost_history_seeds_earlier_keys_with_ids_ordered_or_random(
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    keys = "SELECT call_id FROM call_keys WHERE started_at < $1 ORDER BY started_at"
    new = "SELECT call_id FROM call_keys WHERE started_at >= $1"
    for random_ids, shape in ((False, "[0-9a-f]{36}"), (True, "[0-9a-f]{24}")):
        variant = record_cost.Variant(history=50, random_ids=random_ids, channels=3, agents=1)
        async with record_cost.Subject.open(server, variant) as subject:
            await subject.record(0, 4)
            seeded = [r[0] for r in await subject.pool.fetch(keys, subject.started)]
            recorded = [r[0] for r in await subject.pool.fetch(new, subject.started)]
        assert len(seeded) == 50 and len(recorded) == 4
        assert all(re.fullmatch("call_" + shape, i) for i in seeded + recorded)
        # Ordered ids sort as their calls started, and before the calls recorded after them.
        assert (seeded == sorted(seeded) and max(seeded) < min(recorded)) != random_ids

    await record_cost.history(server, 20, 2, 3, 2)

    runs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["run"] for r in runs] == [0, 1] and all(r["keys"] == 20 for r in runs)
    for figure in ("us_per_call", "wal_bytes_per_call"):
        assert all(r[figure]["ordered"] > 0 and r[figure]["random"] > 0 for r in runs)


async def test_record_cost_times_the_compaction_and_counts_its_hot_updates() -> None:
    server = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    small = record_cost.Variant(channels=200, agents=1, compact=False)
    full = record_cost.FILLFACTORS["call_rollups at fillfactor 100"].setup
    variants = {"as is": small, "full pages": replace(small, setup=full)}

    found = await record_cost.compactions(server, variants, 4, 20, 15)

    for report in found.values():
        assert report["calls_a_compaction"] == 300 and report["median_ms"] > 0
        assert report["updates"] > 0  # the last two cycles fold into rows that exist
    assert found["as is"]["hot_updates"] == found["as is"]["updates"]
    assert found["full pages"]["hot_updates"] < found["full pages"]["updates"]


async def test_the_open_loop_starts_calls_on_time_and_times_them_from_then() -> None:
    started: list[float] = []

    async def record() -> None:
        started.append(time.perf_counter())
        if len(started) == 3:
            raise ValueError("a failed call")
        await asyncio.sleep(0.03)  # longer than the interval: calls overlap

    latencies = await writer_bench.offer(200, 0.1, record)

    assert len(latencies) == len(started) == 20
    assert started[-1] - started[0] < 0.095 + 0.03  # not one after the other
    assert math.isnan(latencies[2])
    assert all(0.03 <= x < 0.2 for i, x in enumerate(latencies) if i != 2)


def test_an_open_loop_point_sends_on_time_and_times_each_answer_to_its_last_byte(
    tmp_path: Path,
) -> None:
    """A server answering every request 20 ms after it arrived, the answer's last byte 5 ms
    after its first: the generator keeps to the rate, its sends leave on time (its timers fire
    on whole milliseconds), each latency runs to the last byte, the server's /metrics page is
    read before the window and after it, and the run, its collector off, left no garbage in
    reference cycles."""
    answer_s, pause_s = 0.02, 0.005
    loop = asyncio.new_event_loop()
    accepted: list[asyncio.BaseTransport] = []
    scrapes: list[float] = []

    class Slow(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            self.transport = transport
            accepted.append(transport)

        def data_received(self, data: bytes) -> None:
            scrapes.extend([time.perf_counter()] * data.count(b"GET /metrics "))
            write = self.transport.write
            for _ in range(data.count(b"\r\n\r\n")):
                loop.call_later(answer_s, write, b"HTTP/1.1 200 OK\r\n")
                loop.call_later(answer_s + pause_s, write, b"Content-Length: 2\r\n\r\nok")

    server = loop.run_until_complete(loop.create_server(Slow, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    serving = threading.Thread(target=loop.run_forever, daemon=True)
    serving.start()
    spec = {
        "mode": "open",
        "targets": [["127.0.0.1", port]],
        "connections": 16,
        "duration_s": 1.0,
        "warmup_s": 0.2,
        "requests": {"kind": "config_const", "count": 1},
        "rate": 200,
        "reuse": True,
        "server_pids": [os.getpid()],
        "metrics": True,
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))

    async def shut() -> None:
        for transport in accepted:
            transport.close()
        server.close()
        await server.wait_closed()

    try:
        # In a process of its own, as the bench runs it.
        subprocess.run(  # noqa: S603
            [
                sys.executable,
                "-m",
                "loadtests.loadgen",
                *(str(tmp_path / f) for f in ("spec.json", "out.json")),
            ],
            check=True,
            timeout=60,
        )
    finally:
        asyncio.run_coroutine_threadsafe(shut(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        serving.join(5)
        loop.close()
    report = json.loads((tmp_path / "out.json").read_text())

    assert report["errors"] == 0 and 180 <= report["achieved_rate"] <= 220, report
    assert report["cyclic_garbage_objects"] == 0
    assert report["metrics_pages"] == [["ok"], ["ok"]]
    assert len(scrapes) == 2 and scrapes[1] - scrapes[0] >= 1.0, scrapes  # the window
    late = report["send_late_ms"]
    assert -1.5 <= late["p50"] <= 1.5 and late["p99"] < 10, late
    assert answer_s + pause_s - 0.0015 <= report["latency_ms"]["p50"] / 1000 < 0.06, report


def test_a_point_reads_its_writes_and_the_routers_own_tail_from_a_metrics_page() -> None:
    """Summed over every label set: two providers' webhooks, one of three over the open loop's
    target."""
    metrics = RouterMetrics()
    for seconds, provider in ((0.002, "twilio"), (0.004, "telnyx"), (0.030, "twilio")):
        metrics.resolution.observe(seconds, provider)
    for size, seconds in ((2, 0.003), (1, 0.020)):
        metrics.batch_size.observe(size)
        metrics.commit.observe(seconds)

    found = bench.router_counts(metrics.exposition().decode())

    assert found == {
        "calls": 3,
        "batches": 2,
        "commits": 2,
        "commits_within_10": 1,
        "commits_within_50": 2,
        "resolved": 3,
        "resolved_within_target": 2,
    }


def test_each_second_of_a_point_gets_its_own_p99() -> None:
    """Open loop: a request counts in the second it was due, however late it finished; closed
    loop: in the second it finished. Failed requests count in neither."""
    start = 100.0
    done = [(100.2, 100.21, True), (100.9, 101.5, True), (101.1, 101.12, True)]
    done += [(101.3, 101.35, False)]

    assert loadgen._p99_by_second(done, start, open_loop=True) == [600.0, 20.0]
    assert loadgen._p99_by_second(done, start, open_loop=False) == [10.0, 600.0]


def test_the_summary_gives_each_tree_its_medians_and_their_ratio_to_the_first() -> None:
    figures = dict.fromkeys(writer_bench.FIGURES, 1.0)
    runs = [
        figures | {"rate": 500, "tree": "before", "cpu_us_per_call": us}
        for us in (300.0, 320.0, 900.0)
    ] + [figures | {"rate": 500, "tree": "after", "cpu_us_per_call": us} for us in (240.0, 250.0)]

    before, after = writer_bench.summarize(runs, ["before", "after"])

    assert before["cpu_us_per_call"] == {"median": 320, "min": 300, "max": 900, "to_first": 1.0}
    assert after["cpu_us_per_call"] == {"median": 245, "min": 240, "max": 250, "to_first": 0.766}
    assert after["runs"] == 2 and after["p99_ms"]["to_first"] == 1.0


def test_a_process_sharing_its_cpu_is_counted_as_waiting_for_it() -> None:
    """Two busy processes pinned to one CPU for half a second: each runs about half the time
    and waits about half; a process that is gone reads as 0."""
    busy = "import time\nend = time.monotonic() + 0.5\nwhile time.monotonic() < end: pass"
    cpu = min(os.sched_getaffinity(0))
    children = [subprocess.Popen([sys.executable, "-c", busy]) for _ in range(2)]  # noqa: S603
    for child in children:
        os.sched_setaffinity(child.pid, {cpu})
    time.sleep(0.4)
    waited = [procstat.wait_seconds(child.pid) for child in children]
    ran = [procstat.run_seconds(child.pid) for child in children]
    for child in children:
        child.wait()
    assert all(w > 0.05 for w in waited), (waited, ran)
    assert procstat.wait_seconds(children[0].pid) == 0.0  # reaped: no /proc entry


def test_cpu_spent_is_what_the_processes_at_the_second_reading_ran_since_the_first() -> None:
    """A process that exits between the readings takes its count with it and adds nothing
    (subtracting sums would take what it ran before the first off the interval); one started
    between them adds all it ran."""
    busy = "import time\nend = time.monotonic() + {s}\nwhile time.monotonic() < end: pass"

    def start(seconds: float) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", busy.format(s=seconds)])  # noqa: S603

    gone, stays = start(0.3), start(0.8)
    time.sleep(0.25)
    before = procstat.cpu_by_pid([gone.pid, stays.pid])
    late = start(0.8)
    gone.wait()
    time.sleep(0.2)
    after = procstat.cpu_by_pid([gone.pid, stays.pid, late.pid])
    for child in (stays, late):
        child.wait()

    assert set(before) == {gone.pid, stays.pid} and set(after) == {stays.pid, late.pid}
    ran = after[stays.pid] - before[stays.pid] + after[late.pid]
    assert procstat.cpu_spent(before, after) == ran and after[late.pid] > 0.0
    assert procstat.cpu_by_pid([stays.pid]) == {}  # reaped: no /proc entry


def test_the_speed_probe_times_its_work_on_every_cpu_in_turn(tmp_path: Path) -> None:
    """Run as the bench runs it, in a process of its own: a median and a least time for each
    CPU this process may use."""
    out = tmp_path / "speed.json"
    subprocess.run(  # noqa: S603
        [sys.executable, "-m", "loadtests.speed", "0", "1", str(out)], check=True, timeout=30
    )
    found = json.loads(out.read_text())

    assert sorted(found) == [str(cpu) for cpu in sorted(os.sched_getaffinity(0))]
    for cpu in found.values():
        assert 0 < cpu["least_ms"] <= cpu["median_ms"]
        assert cpu["rounds"]


def test_a_probe_summary_gives_each_cpu_its_median_least_and_rounds() -> None:
    taken = {0: [(100.1, 1.0), (100.7, 3.0), (101.2, 2.0)], 1: [], 2: [(103.5, 5.0)]}
    assert speed.summary(taken) == {
        "0": {
            "median_ms": 2.0,
            "least_ms": 1.0,
            "rounds": [[100.1, 1.0], [100.7, 3.0], [101.2, 2.0]],
        },
        "2": {"median_ms": 5.0, "least_ms": 5.0, "rounds": [[103.5, 5.0]]},
    }


def test_the_probe_s_seconds_are_those_of_a_window_over_every_cpu() -> None:
    found = speed.summary({0: [(99.9, 9.0), (100.6, 1.0), (101.7, 4.0)], 1: [(100.8, 3.0)]})
    assert speed.by_second(found, 100.5, 3) == [2.0, 4.0, None]


async def test_a_point_starts_on_a_checkpoint_of_its_own_and_a_checkpoint_is_seen(
    database_url: str,
) -> None:
    """What the bench reads around each point that writes: the checkpointer's CPU, and whether
    a checkpoint completed, after one of its own that takes the pages written before."""
    pid, completed = await bench.checkpointer(database_url)
    ran = procstat.run_seconds(pid)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE dirtied AS SELECT g FROM generate_series(1, 100000) g")
        fresh_pid, fresh = await bench.checkpointer(database_url, fresh=True)
        await conn.execute("DROP TABLE dirtied")
    finally:
        await conn.close()

    same_pid, completed_after = await bench.checkpointer(database_url)
    assert fresh_pid == same_pid == pid
    assert procstat.run_seconds(pid) > ran
    assert completed_after == fresh > completed

"""httpkit/metrics_fanin.py in one process: workers' expositions merged into one valid exposition
(by prometheus_client's parser and by promtool), labelled by worker; siblings read over their
private sockets, those that do not answer left out and counted. The same across real worker
processes: tests/test_serve.py."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from admin.metrics import AdminMetrics
from httpkit import metrics_fanin
from httpkit.metrics_fanin import EXPOSITION, UNREACHABLE, Workers, merge
from router.metrics import RouterMetrics
from tests.debian import debian_tool
from tests.test_deploy import PROMTOOL


def families(text: str) -> dict[str, list[Sample]]:
    """Each family's samples, failing on a family met twice: prometheus_client's parser starts
    a new family at a second HELP or TYPE, and at a sample away from its family's others."""
    parsed = [(family.name, family.samples) for family in text_string_to_metric_families(text)]
    names = [name for name, _ in parsed]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    return dict(parsed)


def value(samples: list[Sample], name: str, **labels: str) -> float:
    [found] = [s.value for s in samples if s.name == name and s.labels == labels]
    return found


def two_routers() -> tuple[bytes, bytes]:
    """Two workers' expositions: counters, a histogram, a gauge, and series only one has."""
    first, second = RouterMetrics(), RouterMetrics()
    for _ in range(3):
        first.calls.inc("twilio", "a", "routed", "agt_1", "2")
    for _ in range(5):
        second.calls.inc("twilio", "a", "routed", "agt_1", "2")
    second.calls.inc("twilio", "", "fallback", "", "")
    first.resolution.observe(0.003, "twilio")
    second.feed_connected.set(1)
    # A label value with what a line-based merge could trip on.
    first.rejected.labels("generic", 'bad "sig" {x} \\ \r end').inc()
    return first.exposition(), second.exposition()


def test_merged_expositions_keep_each_family_once_and_label_every_sample() -> None:
    first, second = two_routers()
    merged = families(merge([(0, first), (1, second)]).decode())
    alone = families(first.decode())

    assert merged.keys() == alone.keys()
    routed = merged["agentver_calls_routed"]
    key = {"provider": "twilio", "variant": "a", "agent_id": "agt_1", "version": "2"}
    total = "agentver_calls_routed_total"
    assert value(routed, total, worker="0", outcome="routed", **key) == 3
    assert value(routed, total, worker="1", outcome="routed", **key) == 5
    assert len(routed) == 3
    [rejected] = merged["agentver_webhooks_rejected"]
    assert rejected.labels == {
        "worker": "0",
        "provider": "generic",
        "reason": 'bad "sig" {x} \\ \r end',
    }
    buckets = [s for s in merged["agentver_resolution_seconds"] if s.name.endswith("_bucket")]
    assert {s.labels["worker"] for s in buckets} == {"0"}
    assert (
        value(
            merged["agentver_change_feed_connected"], "agentver_change_feed_connected", worker="1"
        )
        == 1
    )
    for samples in merged.values():
        assert all(s.labels["worker"] in ("0", "1") for s in samples)
    # Every sample of both, none twice, none more.
    count = sum(len(s) for s in merged.values())
    assert count == sum(len(s) for s in families(second.decode()).values()) + sum(
        len(s) for s in alone.values()
    )


@pytest.mark.parametrize(
    ("sample", "labelled"),
    [
        (b"up 1.0", b'up{worker="3"} 1.0'),
        (b"up{} 1.0", b'up{worker="3"} 1.0'),
        (b'x_total{a="b"} 2.0', b'x_total{worker="3",a="b"} 2.0'),
        (b'x{a="{ }"} 2.0 1700000000000', b'x{worker="3",a="{ }"} 2.0 1700000000000'),
    ],
)
def test_a_sample_gets_the_worker_label_first(sample: bytes, labelled: bytes) -> None:
    assert merge([(3, b"# TYPE x untyped\n" + sample + b"\n")]).split(b"\n")[1] == labelled


def test_a_sample_before_its_family_header_is_refused() -> None:
    with pytest.raises(ValueError, match="before any HELP or TYPE"):
        merge([(0, b"up 1.0\n")])


def test_promtool_accepts_a_merged_exposition() -> None:
    promtool = debian_tool(PROMTOOL, "prometheus")
    first, second = two_routers()
    admin = [AdminMetrics().exposition() for _ in range(2)]
    for texts in ([first, second], admin):
        merged = merge(enumerate(texts))
        done = subprocess.run(  # noqa: S603 (our own input)
            [promtool, "check", "metrics"], input=merged, capture_output=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


async def _hung(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A sibling whose worker is stopped: it accepts, and never answers (the scrape gives up
    and hangs up)."""
    await reader.read()
    writer.close()


async def _cut(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A sibling killed mid-answer: a length, then fewer bytes."""
    writer.write(metrics_fanin._LENGTH.pack(1000) + b"# HELP x")
    writer.close()


@pytest.fixture
async def siblings(tmp_path: Path) -> AsyncIterator[Workers]:
    """Slot 0's view of six slots: 1 a real worker app (its exposition a megabyte, as a router
    that served ten thousand agent versions has: far more than a stream reads at once), 2 hung,
    3 cut off, 4 never started, 5 a stale socket file left by a killed worker."""
    big = RouterMetrics()
    for n in range(10_000):
        big.calls.inc("twilio", "a", "routed", f"agt_{n}", "1")
    body = big.exposition()
    assert len(body) > 1_000_000
    sibling = web.Application()
    sibling[EXPOSITION] = lambda: body
    metrics_fanin.join(sibling, Workers(tmp_path, 1, 6))
    runner = web.AppRunner(sibling)
    await runner.setup()
    view = Workers(tmp_path, 0, 6)
    servers = [
        await asyncio.start_unix_server(_hung, view.socket(2)),
        await asyncio.start_unix_server(_cut, view.socket(3)),
    ]
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(view.socket(5)))
    yield view
    for server in servers:
        server.close()
    await runner.cleanup()
    assert not view.socket(1).exists()


async def test_siblings_that_do_not_answer_are_left_out_and_counted(
    siblings: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_fanin, "SIBLING_TIMEOUT_S", 0.5)
    view = siblings
    own = RouterMetrics()
    for _ in range(7):
        own.calls.inc("twilio", "a", "routed", "agt_1", "1")
    app = web.Application()
    app[EXPOSITION] = own.exposition
    app[metrics_fanin.WORKERS] = view

    started = time.monotonic()
    # Two scrapes at once, as two Prometheus servers scraping one target do.
    texts = await asyncio.gather(*(metrics_fanin.exposition(app) for _ in range(2)))
    assert time.monotonic() - started < 1.5
    for text in texts:
        merged = families(text.decode())
        assert value(merged[UNREACHABLE], UNREACHABLE) == 4
        workers = {s.labels["worker"] for f, s_ in merged.items() if f != UNREACHABLE for s in s_}
        assert workers == {"0", "1"}
        from_sibling = [s for s in merged["agentver_calls_routed"] if s.labels["worker"] == "1"]
        assert len(from_sibling) == 10_000
        routed = value(
            merged["agentver_calls_routed"],
            "agentver_calls_routed_total",
            worker="0",
            **{"provider": "twilio", "variant": "a", "outcome": "routed"},
            **{"agent_id": "agt_1", "version": "1"},
        )
        assert routed == 7


async def test_a_server_without_workers_serves_its_own_exposition_unlabelled() -> None:
    own = RouterMetrics()
    app = web.Application()
    app[EXPOSITION] = own.exposition
    merged = families((await metrics_fanin.exposition(app)).decode())
    assert merged.keys() == {*families(own.exposition().decode()), UNREACHABLE}
    assert value(merged[UNREACHABLE], UNREACHABLE) == 0
    assert all("worker" not in s.labels for samples in merged.values() for s in samples)

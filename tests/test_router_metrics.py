"""The router's per-call tallies export what prometheus_client's own Counter and Histogram
would, fed the same observations (their `_created` samples aside); the per-call log line is
sampled."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from router.metrics import LATENCY_BUCKETS, Tally, TallyHistogram
from store import logs

LABELS = ["provider", "agent_id", "version"]
OBSERVED = [
    (0.0003, ("twilio", "agt_1", "2")),
    (0.001, ("twilio", "agt_1", "2")),  # on a bound: counted in that bucket
    (0.0042, ("twilio", "agt_1", "draft")),
    (7.0, ("telnyx", "agt_2", "1")),  # past the last bound: +Inf only
    (0.0, ("twilio", "agt_1", "2")),
]


def _exposition(registry: CollectorRegistry) -> list[str]:
    return sorted(
        line for line in generate_latest(registry).decode().splitlines() if "_created" not in line
    )


def test_a_tally_exports_what_a_counter_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = Tally("agentver_x", "Things.", LABELS, ours)
    counter = Counter("agentver_x", "Things.", LABELS, registry=theirs)
    for _, values in OBSERVED:
        tally.inc(*values)
        counter.labels(*values).inc()

    assert _exposition(ours) == _exposition(theirs)


def test_a_tally_histogram_exports_what_a_histogram_would() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tally = TallyHistogram("agentver_y_seconds", "Times.", LABELS, LATENCY_BUCKETS, ours)
    histogram = Histogram(
        "agentver_y_seconds", "Times.", LABELS, buckets=LATENCY_BUCKETS, registry=theirs
    )
    for seconds, values in OBSERVED:
        tally.observe(seconds, *values)
        histogram.labels(*values).observe(seconds)

    assert _exposition(ours) == _exposition(theirs)
    first = {"provider": "twilio", "agent_id": "agt_1", "version": "2", "le": "0.001"}
    assert ours.get_sample_value("agentver_y_seconds_bucket", first) == 3


def test_a_sampled_line_is_due_first_then_once_an_interval_counting_what_it_stands_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr("store.logs.time.monotonic", lambda: now[0])
    sampler = logs.Sampler(1.0)

    ticks = [sampler.tick()]
    for at in (100.2, 100.9, 101.0, 101.5, 103.0):
        now[0] = at
        ticks.append(sampler.tick())

    assert ticks == [1, 0, 0, 3, 0, 2]

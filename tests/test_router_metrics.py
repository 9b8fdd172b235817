"""The router's per-call tallies export what prometheus_client's own Counter and Histogram
would, fed the same observations (their `_created` samples aside); the per-call log line is
sampled."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from httpkit.tally import Tally, TallyHistogram
from router.metrics import LATENCY_BUCKETS
from store import logs

LABELS = ["provider", "agent_id", "version"]
OBSERVED = [
    (0.0003, ("twilio", "agt_1", "2")),
    (0.001, ("twilio", "agt_1", "2")),  # on a bound: counted in that bucket
    (0.0042, ("twilio", "agt_1", "draft")),
    (7.0, ("telnyx", "agt_2", "1")),  # past the last bound: +Inf only
    (0.0, ("twilio", "agt_1", "2")),
    # A variant's label is a user's: what the text format must escape, and more.
    (0.02, ("generic", 'a "quoted" \\ back\\slash\nnew line {x} ünï', "1")),
]
HELP = 'Things, "quoted", with a \\ and a\nsecond line.'


def _samples(text: str) -> dict[str, tuple[str, str, list[Sample]]]:
    """Each family's type, documentation and samples, sorted; `_created` samples left out."""
    return {
        f.name: (
            f.type,
            f.documentation,
            sorted(
                (s for s in f.samples if not s.name.endswith("_created")),
                key=lambda s: (s.name, sorted(s.labels.items())),
            ),
        )
        for f in text_string_to_metric_families(text)
        if not f.name.endswith("_created")
    }


def _series(text: str) -> list[str]:
    """Each sample line up to its value: a scrape read as text (a grep, a test) finds the
    series where prometheus_client writes it, labels sorted by name."""
    return sorted(
        line.rsplit(" ", 1)[0]
        for line in text.splitlines()
        if line and not line.startswith("#") and "_created" not in line
    )


def test_a_tally_exports_what_a_counter_would() -> None:
    theirs = CollectorRegistry()
    tally = Tally("agentver_x", HELP, LABELS)
    counter = Counter("agentver_x", HELP, LABELS, registry=theirs)
    for _, values in OBSERVED:
        tally.inc(*values)
        counter.labels(*values).inc()

    ours, expected = tally.render(), generate_latest(theirs).decode()
    assert _samples(ours) == _samples(expected)
    assert _series(ours) == _series(expected)


def test_a_tally_histogram_exports_what_a_histogram_would() -> None:
    theirs = CollectorRegistry()
    tally = TallyHistogram("agentver_y_seconds", HELP, LABELS, LATENCY_BUCKETS)
    histogram = Histogram(
        "agentver_y_seconds", HELP, LABELS, buckets=LATENCY_BUCKETS, registry=theirs
    )
    for seconds, values in OBSERVED:
        tally.observe(seconds, *values)
        histogram.labels(*values).observe(seconds)

    ours, expected = tally.render(), generate_latest(theirs).decode()
    assert _samples(ours) == _samples(expected)
    assert _series(ours) == _series(expected)
    first = {"provider": "twilio", "agent_id": "agt_1", "version": "2", "le": "0.001"}
    [bucket] = [s for s in _samples(ours)["agentver_y_seconds"][2] if s.labels == first]
    assert bucket.value == 3


@pytest.mark.parametrize("counted", ["tally", "histogram"])
def test_a_series_that_observed_nothing_since_the_last_sweep_is_dropped(counted: str) -> None:
    """Swept twice without an observation between: gone, rendered as if never observed; the
    series that kept counting stay as they were, and one that comes back counts from zero."""

    def made() -> Tally | TallyHistogram:
        if counted == "tally":
            return Tally("agentver_x", HELP, LABELS)
        return TallyHistogram("agentver_y_seconds", HELP, LABELS, LATENCY_BUCKETS)

    def observe(into: Tally | TallyHistogram, values: tuple[str, ...]) -> None:
        if isinstance(into, Tally):
            into.inc(*values)
        else:
            into.observe(0.002, *values)

    family, theirs = made(), made()
    kept, idle, hostile = OBSERVED[0][1], OBSERVED[3][1], OBSERVED[5][1]
    for values in (kept, idle, hostile, kept):
        observe(family, values)

    assert family.forget_idle() == 0  # nothing seen before
    observe(family, kept)
    assert family.forget_idle() == 2
    observe(family, idle)
    for values in (kept, kept, kept, idle):
        observe(theirs, values)
    assert family.render() == theirs.render()
    assert family.forget_idle() == 1  # `kept` counted nothing since


def test_a_tally_with_nothing_counted_exports_its_family_alone() -> None:
    assert _samples(Tally("agentver_x", HELP, LABELS).render()) == {
        "agentver_x": ("counter", HELP, [])
    }


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

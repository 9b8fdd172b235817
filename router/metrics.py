"""The router's Prometheus metrics: prometheus_client's in a registry of its own per application,
the per-call ones as plain numbers that render themselves."""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.utils import floatToGoString

from store.calls import EndedCall
from store.snapshots import version_label
from store.stats import CALL_DURATION_BUCKETS_S

# Seconds: resolution runs from microseconds (L1 hits) to tens of milliseconds (a cold miss and
# a group commit); the change feed lags milliseconds unless something is wrong.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Calls: a batch holds what arrived while the one before it committed, up to MAX_BATCH (100).
BATCH_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


def _escaped(text: str) -> str:
    """A label value as the text format writes it."""
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Tallied:
    """What Tally and TallyHistogram share: plain numbers, counted from the event loop, that a
    scrape renders as text itself. prometheus_client formats every sample anew (its labels
    sorted and escaped, its value through floatToGoString), 10 µs a line, and the per-call
    families hold a series for each agent version a worker served, 15 lines each for the
    resolution histogram: 190 ms of the event loop a scrape, every call waiting meanwhile,
    after 1,150 agent versions (loadtests/README.md, "The scrape"). Here a series' labels are
    rendered once."""

    def __init__(self, name: str, documentation: str, labelnames: list[str], kind: str) -> None:
        if "le" in labelnames:
            raise ValueError("`le` is the histogram buckets' label")
        self._name, self._labelnames = name, labelnames
        exposed = name + "_total" if kind == "counter" else name
        help_text = documentation.replace("\\", r"\\").replace("\n", r"\n")
        self._header = f"# HELP {exposed} {help_text}\n# TYPE {exposed} {kind}\n"
        self._labels: dict[tuple[str, ...], tuple[str, str, str]] = {}
        # Each series' observations at the last `forget_idle`.
        self._seen: dict[tuple[str, ...], float] = {}

    def _observations(self) -> dict[tuple[str, ...], float]:
        """Each series' count of observations."""
        raise NotImplementedError

    def _drop(self, values: tuple[str, ...]) -> None:
        raise NotImplementedError

    def forget_idle(self) -> int:
        """Drop the series that observed nothing since the last call, and return how many.
        Families labelled by agent version get a series for every version a worker serves, and
        a worker serves each version for a while: kept for good, they would make every scrape
        longer and the worker bigger for as long as it runs. Prometheus reads a series that
        comes back as a counter reset."""
        counts = self._observations()
        idle = [values for values, n in counts.items() if self._seen.get(values) == n]
        for values in idle:
            self._drop(values)
            self._labels.pop(values, None)
            del counts[values]
        self._seen = counts
        return len(idle)

    def _labels_of(self, values: tuple[str, ...]) -> tuple[str, str, str]:
        """The series' labels as the text format writes them, sorted by name as prometheus_client
        writes them (`a="1",b="2"`): all of them, those before `le`, those after it."""
        text = self._labels.get(values)
        if text is None:
            pairs = [
                (name, f'{name}="{_escaped(value)}"')
                for name, value in sorted(zip(self._labelnames, values, strict=True))
            ]
            text = self._labels[values] = (
                ",".join(pair for _, pair in pairs),
                ",".join(pair for name, pair in pairs if name < "le"),
                ",".join(pair for name, pair in pairs if name > "le"),
            )
        return text


class Tally(_Tallied):
    """A labelled counter kept as plain integers: counting is one dict update, where a
    prometheus_client child takes a lock on every increment (a tenth of the router's CPU per
    webhook went to the per-call counters)."""

    def __init__(self, name: str, documentation: str, labelnames: list[str]) -> None:
        super().__init__(name, documentation, labelnames, "counter")
        self._counts: dict[tuple[str, ...], int] = {}

    def inc(self, *values: str) -> None:
        self._counts[values] = self._counts.get(values, 0) + 1

    def _observations(self) -> dict[tuple[str, ...], float]:
        return dict(self._counts)

    def _drop(self, values: tuple[str, ...]) -> None:
        del self._counts[values]

    def render(self) -> str:
        """The counter in the text format, as `<name>_total`."""
        name = self._name + "_total"
        return self._header + "".join(
            f"{name}{{{self._labels_of(values)[0]}}} {count}\n"
            for values, count in list(self._counts.items())
        )


class TallyHistogram(_Tallied):
    """A labelled histogram kept as plain numbers, like Tally: per series, the count of each
    bucket (the last one +Inf) and then the sum."""

    def __init__(
        self, name: str, documentation: str, labelnames: list[str], buckets: tuple[float, ...]
    ) -> None:
        super().__init__(name, documentation, labelnames, "histogram")
        self._bounds = buckets
        self._les = [*(floatToGoString(b) for b in buckets), "+Inf"]  # type: ignore[no-untyped-call]
        self._series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, value: float, *values: str) -> None:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = [0.0] * (len(self._bounds) + 2)
        # A value on a bound counts in that bound's bucket (le), as prometheus_client counts it.
        series[bisect_left(self._bounds, value)] += 1
        series[-1] += value

    def _observations(self) -> dict[tuple[str, ...], float]:
        return {values: sum(series[:-1]) for values, series in self._series.items()}

    def _drop(self, values: tuple[str, ...]) -> None:
        del self._series[values]

    def render(self) -> str:
        """The histogram in the text format: per series its cumulative buckets, count, sum."""
        name = self._name
        lines = [self._header]
        for values, series in list(self._series.items()):
            labels, before, after = self._labels_of(values)
            head = f'{name}_bucket{{{before}{"," if before else ""}le="'
            tail = f'"{"," if after else ""}{after}}} '
            cumulative = list(accumulate(series[:-1]))
            lines.extend(
                f"{head}{le}{tail}{count}\n"
                for le, count in zip(self._les, cumulative, strict=True)
            )
            lines.append(
                f"{name}_count{{{labels}}} {cumulative[-1]}\n{name}_sum{{{labels}}} {series[-1]}\n"
            )
        return "".join(lines)


class RouterMetrics:
    """Every metric the router exports; `agent_id`/`version` ("draft" for drafts, "" when no
    agent was resolved) label the per-call ones."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # CPU seconds, resident memory, open file descriptors (process_*), from /proc.
        ProcessCollector(registry=r)
        # The per-call ones, counted on every webhook or cache lookup, outside the registry:
        # they render themselves (`exposition`).
        self.calls = Tally(
            "agentver_calls_routed",
            "Provider calls answered, by outcome (routed, retry, fallback).",
            ["provider", "variant", "outcome", "agent_id", "version"],
        )
        # By provider alone: fifteen series an agent version, which a worker serving thousands
        # of versions would render at every scrape, while its calls wait, to tell apart what
        # the router does the same way for every version (loadtests/README.md, "The scrape").
        self.resolution = TallyHistogram(
            "agentver_resolution_seconds",
            "Webhook arrival to answer, signature check excluded.",
            ["provider"],
            LATENCY_BUCKETS,
        )
        self.cache = Tally(
            "agentver_cache_lookups",
            "Cache lookups by entry kind, tier (l1, redis, postgres) and result.",
            ["kind", "tier", "result"],
        )
        self.rejected = Counter(
            "agentver_webhooks_rejected_total",
            "Webhooks refused before anything was recorded, by reason.",
            ["provider", "reason"],
            registry=r,
        )
        self.fallbacks = Counter(
            "agentver_fallbacks_total",
            "Calls answered with AGENTVER_FALLBACK, by reason.",
            ["provider", "reason"],
            registry=r,
        )
        self.call_duration = TallyHistogram(
            "agentver_call_duration_seconds",
            "Length of ended calls, by the agent and version that served them.",
            ["agent_id", "version"],
            CALL_DURATION_BUCKETS_S,
        )
        self.feed_lag = Histogram(
            "agentver_change_feed_lag_seconds",
            "Commit of a change to its notification being applied here.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.feed_connected = Gauge(
            "agentver_change_feed_connected",
            "1 while the change feed listens and the mutable cache is trusted.",
            registry=r,
        )
        self.provider_commands = Counter(
            "agentver_provider_commands_total",
            "Commands sent to provider APIs (Telnyx Call Control), by action and result.",
            ["provider", "action", "result"],
            registry=r,
        )

        self.batch_size = Histogram(
            "agentver_call_batch_size",
            "Calls per group-commit batch (one statement, one commit).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.commit = Histogram(
            "agentver_call_commit_seconds",
            "A group-commit batch from sending its record statement to its durable commit: what"
            " every call of the batch waits before its answer (a slow disk flush shows here).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.spool = Counter(
            "agentver_spool_records_total",
            "Call records and call endings written to the local spool while Postgres was"
            " unavailable, replayed into it later, or dropped (never recorded: must stay 0).",
            ["event"],
            registry=r,
        )
        for event in ("spooled", "replayed", "dropped"):
            self.spool.labels(event)
        self.spool_pending = Gauge(
            "agentver_spool_pending_bytes",
            "Bytes in the spool directory awaiting replay into Postgres (every worker sharing"
            " the directory reports the same total).",
            registry=r,
        )
        self.dependency_up = Gauge(
            "agentver_dependency_up",
            "0 while a dependency's circuit breaker is open (calls skip it), else 1.",
            ["dependency"],
            registry=r,
        )

    def observe_ended(self, ended: EndedCall | None) -> None:
        """Count a call's duration once, when an ending closes it (repeats return None)."""
        if ended is not None:
            self.call_duration.observe(
                ended.duration_s, ended.agent_id, version_label(ended.version)
            )

    def observe_cache(self, kind: str, tier: str, result: str) -> None:
        self.cache.inc(kind, tier, result)

    def forget_idle_series(self) -> None:
        """Drop the per-version series (calls routed, call durations) that counted nothing
        since the last call: the router calls this every AGENTVER_METRIC_SERIES_IDLE_S."""
        for family in (self.calls, self.call_duration):
            family.forget_idle()

    def exposition(self) -> bytes:
        """Every metric in the text format: prometheus_client's, then the tallies."""
        tallied = (self.calls, self.resolution, self.call_duration, self.cache)
        return generate_latest(self.registry) + "".join(t.render() for t in tallied).encode()

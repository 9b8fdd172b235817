"""The router's Prometheus metrics, in a registry of its own per application."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
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


class Tally:
    """A labelled counter kept as plain integers and read when scraped: counting is one dict
    update, where a prometheus_client child takes a lock on every increment (a tenth of the
    router's CPU per webhook went to the per-call counters). The router counts from one thread,
    its event loop; a scrape copies the counts first."""

    def __init__(
        self, name: str, documentation: str, labelnames: list[str], registry: CollectorRegistry
    ) -> None:
        self._name, self._documentation, self._labelnames = name, documentation, labelnames
        self._counts: dict[tuple[str, ...], int] = {}
        registry.register(self)

    def inc(self, *values: str) -> None:
        self._counts[values] = self._counts.get(values, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, count in list(self._counts.items()):
            family.add_metric(values, count)
        yield family


class TallyHistogram:
    """A labelled histogram kept as plain numbers, like Tally: per series, the count of each
    bucket (the last one +Inf) and then the sum."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: list[str],
        buckets: tuple[float, ...],
        registry: CollectorRegistry,
    ) -> None:
        self._name, self._documentation, self._labelnames = name, documentation, labelnames
        self._bounds = buckets
        self._les = [*(floatToGoString(b) for b in buckets), "+Inf"]  # type: ignore[no-untyped-call]
        self._series: dict[tuple[str, ...], list[float]] = {}
        registry.register(self)

    def observe(self, value: float, *values: str) -> None:
        series = self._series.get(values)
        if series is None:
            series = self._series[values] = [0.0] * (len(self._bounds) + 2)
        # A value on a bound counts in that bound's bucket (le), as prometheus_client counts it.
        series[bisect_left(self._bounds, value)] += 1
        series[-1] += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for values, series in list(self._series.items()):
            cumulative = accumulate(series[:-1])
            family.add_metric(
                list(values), list(zip(self._les, cumulative, strict=True)), series[-1]
            )
        yield family


class RouterMetrics:
    """Every metric the router exports; `agent_id`/`version` ("draft" for drafts, "" when no
    agent was resolved) label the per-call ones."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # CPU seconds, resident memory, open file descriptors (process_*), from /proc.
        ProcessCollector(registry=r)
        # The per-call ones, counted on every webhook or cache lookup.
        self.calls = Tally(
            "agentver_calls_routed",
            "Provider calls answered, by outcome (routed, retry, fallback).",
            ["provider", "variant", "outcome", "agent_id", "version"],
            r,
        )
        self.resolution = TallyHistogram(
            "agentver_resolution_seconds",
            "Webhook arrival to answer, signature check excluded.",
            ["provider", "agent_id", "version"],
            LATENCY_BUCKETS,
            r,
        )
        self.cache = Tally(
            "agentver_cache_lookups",
            "Cache lookups by entry kind, tier (l1, redis, postgres) and result.",
            ["kind", "tier", "result"],
            r,
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
        self.call_duration = Histogram(
            "agentver_call_duration_seconds",
            "Length of ended calls, by the agent and version that served them.",
            ["agent_id", "version"],
            buckets=CALL_DURATION_BUCKETS_S,
            registry=r,
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
            self.call_duration.labels(ended.agent_id, version_label(ended.version)).observe(
                ended.duration_s
            )

    def observe_cache(self, kind: str, tier: str, result: str) -> None:
        self.cache.inc(kind, tier, result)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

"""The router's Prometheus metrics, in a registry of its own per application."""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from store.calls import EndedCall
from store.snapshots import version_label
from store.stats import CALL_DURATION_BUCKETS_S

# Seconds: resolution runs from microseconds (L1 hits) to tens of milliseconds (a cold miss and
# a group commit); the change feed lags milliseconds unless something is wrong.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)

M = TypeVar("M", Counter, Histogram)


class ChildCache(Generic[M]):
    """A labelled metric's children, cached by label values: `labels()` validates and takes a
    lock on every call, a dict lookup does not. Holds no more than the metric itself keeps."""

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child


class RouterMetrics:
    """Every metric the router exports; `agent_id`/`version` ("draft" for drafts, "" when no
    agent was resolved) label the per-call ones."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # CPU seconds, resident memory, open file descriptors (process_*), from /proc.
        ProcessCollector(registry=r)
        self.calls = Counter(
            "agentver_calls_routed_total",
            "Provider calls answered, by outcome (routed, retry, fallback).",
            ["provider", "variant", "outcome", "agent_id", "version"],
            registry=r,
        )
        self.resolution = Histogram(
            "agentver_resolution_seconds",
            "Webhook arrival to answer, signature check excluded.",
            ["provider", "agent_id", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "agentver_cache_lookups_total",
            "Cache lookups by entry kind, tier (l1, redis, postgres) and result.",
            ["kind", "tier", "result"],
            registry=r,
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

        # The per-call ones, looked up on every webhook or cache lookup.
        self.call = ChildCache(self.calls)
        self.resolved = ChildCache(self.resolution)
        self._cache_lookup = ChildCache(self.cache)

    def observe_ended(self, ended: EndedCall | None) -> None:
        """Count a call's duration once, when an ending closes it (repeats return None)."""
        if ended is not None:
            self.call_duration.labels(ended.agent_id, version_label(ended.version)).observe(
                ended.duration_s
            )

    def observe_cache(self, kind: str, tier: str, result: str) -> None:
        self._cache_lookup(kind, tier, result).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

"""The router's Prometheus metrics: prometheus_client's in a registry of its own per application,
the per-call ones as plain numbers that render themselves."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from httpkit.tally import Tally, TallyHistogram
from store.calls import EndedCall
from store.snapshots import version_label
from store.stats import CALL_DURATION_BUCKETS_S

# Seconds: resolution runs from microseconds (L1 hits) to tens of milliseconds (a cold miss and
# a group commit); the change feed lags milliseconds unless something is wrong.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Calls: a batch holds what arrived while the one before it committed, up to MAX_BATCH (100).
BATCH_BUCKETS = (1, 2, 5, 10, 20, 30, 50, 75, 100)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


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
        since the last call (FORGET_IDLE_SERIES)."""
        for family in (self.calls, self.call_duration):
            family.forget_idle()

    def exposition(self) -> bytes:
        """Every metric in the text format: prometheus_client's, then the tallies."""
        tallied = (self.calls, self.resolution, self.call_duration, self.cache)
        return generate_latest(self.registry) + "".join(t.render() for t in tallied).encode()

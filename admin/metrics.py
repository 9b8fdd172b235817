"""Prometheus metrics of the admin service, in a registry of each application's own, and its
readiness."""

from __future__ import annotations

from typing import get_args

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from httpkit import health
from httpkit.endpoint import endpoint
from httpkit.keys import POOL
from httpkit.tally import Tally
from store import db
from store.calls import CallRecord
from store.guardrails import Trip
from store.rollouts import Rollout, State
from store.snapshots import version_label


class AdminMetrics:
    """Counters of call analyses (per agent and version), of guardrail trips and of what the
    rollups' compaction folded, and how long it took; the rollouts' gauges; the process's CPU,
    memory and file descriptors."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        # By agent version, outside the registry: they render themselves and drop the series
        # of versions no longer analysed (httpkit/tally.py), as the router's per-version ones do.
        labels = ["agent_id", "version"]
        self.analyses = Tally("agentver_call_analyses", "Call analyses received", labels)
        self.automated = Tally(
            "agentver_calls_automated",
            "Call analyses reporting the call fully automated (no human needed)",
            labels,
        )
        self.sentiment = Tally(
            "agentver_call_sentiment", "Call analyses by caller sentiment", [*labels, "sentiment"]
        )
        self.guardrail_trips = Counter(
            "agentver_guardrail_trips",
            "A/B variants set to weight 0 by a guardrail",
            ["channel", "metric"],
            registry=self.registry,
        )

        self.rollout_step = Gauge(
            "agentver_rollout_step",
            "The live step (1 = the first) of each channel's latest rollout",
            ["channel"],
            registry=self.registry,
        )
        self.rollout_state = Gauge(
            "agentver_rollout_state",
            "1 for the state each channel's latest rollout is in, 0 for the others",
            ["channel", "state"],
            registry=self.registry,
        )
        # Flat while calls are recorded: the compaction is failing or held off (a backfill),
        # and every rollups read aggregates more pending calls (docs/design.md section 12).
        self.rollups_folded = Counter(
            "agentver_rollup_folded",
            "Recorded calls and update deltas folded into the call rollups by this process",
            registry=self.registry,
        )
        # A compaction is a burst of Postgres CPU: a second's calls folded at once, and the
        # routing latency's tail grows with it (loadtests/README.md, "Latest run").
        self.rollup_compaction = Histogram(
            "agentver_rollup_compaction_seconds",
            "Time a compaction of the call rollups took, by this process",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.rollout_rollbacks = Counter(
            "agentver_rollout_rollbacks",
            "Rollouts rolled back by a broken guardrail (by this process)",
            ["channel"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        tallied = "".join(t.render() for t in self._per_version)
        return generate_latest(self.registry) + tallied.encode()

    def forget_idle_series(self) -> None:
        """Drop the per-version series that counted nothing since the last call
        (FORGET_IDLE_SERIES)."""
        for family in self._per_version:
            family.forget_idle()

    @property
    def _per_version(self) -> tuple[Tally, ...]:
        return (self.analyses, self.automated, self.sentiment)

    def count_analysis(self, call: CallRecord) -> None:
        """Count one posted analysis (a re-post counts again: these count analyses received)."""
        version = version_label(call.version)
        self.analyses.inc(call.agent_id, version)
        if call.automated:
            self.automated.inc(call.agent_id, version)
        if call.sentiment is not None:
            self.sentiment.inc(call.agent_id, version, call.sentiment)

    def count_compaction(self, folded: int, seconds: float) -> None:
        self.rollups_folded.inc(folded)
        self.rollup_compaction.observe(seconds)

    def count_trip(self, channel: str, trip: Trip) -> None:
        self.guardrail_trips.labels(channel, trip.rule.metric).inc()

    def show_rollouts(self, latest: list[Rollout]) -> None:
        """Set the rollout gauges from every channel's latest rollout."""
        for r in latest:
            self.rollout_step.labels(r.number).set(r.step + 1)
            for state in get_args(State):
                self.rollout_state.labels(r.number, state).set(1 if state == r.state else 0)


METRICS = web.AppKey("metrics", AdminMetrics)


@endpoint(
    "Readiness: Postgres answers",
    responses={200: health.Readiness, 503: health.Readiness},
)
async def readyz(request: web.Request) -> web.Response:
    """200 when Postgres answers; 503 naming it otherwise."""
    return await health.readiness({"postgres": db.ping(request.app[POOL], health.READY_TIMEOUT_S)})

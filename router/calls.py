"""Route one incoming call: plan it, record it, count it, log it; or count its fallback."""

from __future__ import annotations

import time

import structlog
from aiohttp import web

from router.keys import METRICS, RESOLVER, ROUTED_LOG, WRITER
from store.call_routing import Unroutable
from store.calls import CallRecord, new_call_id
from store.snapshots import version_label

log = structlog.get_logger()

# Seconds between two `call_routed` lines: each call's row in Postgres holds what the line
# would, and a line per call cost a twentieth of the router's CPU per webhook; one a second
# still shows a worker routing, and what it routed lately. Warnings and errors are all logged.
ROUTED_LOG_INTERVAL_S = 1.0


def fallback(app: web.Application, provider: str, reason: str) -> Unroutable:
    """Count (and log) a call answered with the fallback, and say why."""
    metrics = app[METRICS]
    metrics.fallbacks.labels(provider, reason).inc()
    metrics.calls.inc(provider, "", "fallback", "", "")
    log.info("call_fallback", provider=provider, reason=reason)
    return Unroutable(reason)


async def route_call(
    app: web.Application, provider: str, to: str, raw_from: str, provider_call_id: str
) -> CallRecord | Unroutable:
    """Resolve and durably record one call; Unroutable (counted) when it gets the fallback."""
    started = time.perf_counter()
    call_id = new_call_id()
    try:
        call = await app[RESOLVER].plan(call_id, provider, to, raw_from, provider_call_id)
        if isinstance(call, Unroutable):
            return fallback(app, provider, call.reason)
        record = await app[WRITER].record(call)
    # Whatever failed, the provider still gets a valid answer: the fallback.
    except Exception:
        log.exception("call_routing_failed", provider=provider)
        return fallback(app, provider, "error")
    version = version_label(record.version)
    outcome = "routed" if record.call_id == call_id else "retry"
    metrics = app[METRICS]
    metrics.calls.inc(provider, record.variant, outcome, record.agent_id, version)
    metrics.resolution.observe(time.perf_counter() - started, provider)
    calls = app[ROUTED_LOG].tick()
    if calls:
        log.info(
            "call_routed",
            call_id=record.call_id,
            agent_id=record.agent_id,
            version=version,
            provider=provider,
            variant=record.variant,
            outcome=outcome,
            calls=calls,
        )
    return record

"""Call-time resolution: number → routing → variant → snapshot, read through the cache."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from store import channels, codecs, resolution, snapshots
from store.cache import LayeredCache
from store.calls import Candidate, find_assignment
from store.channels import Routing, Variant, find_channel
from store.db import DATABASE_UNAVAILABLE
from store.errors import StoreError
from store.resolution import Draw, Unroutable
from store.snapshots import Snapshot

log = structlog.get_logger()

# What the channels serve: the versions they pin and the drafts of the agents they route to a
# draft, as snapshots (agent_id, version, draft_revision, config_hash).
SERVED_SNAPSHOTS = """
SELECT v.agent_id, v.version, NULL::integer AS draft_revision, v.config_hash
FROM versions v
WHERE (v.agent_id, v.version) IN (SELECT agent_id, version FROM channel_variants)
UNION ALL
SELECT d.agent_id, NULL, d.revision, d.config_hash
FROM drafts d
WHERE d.agent_id IN (SELECT agent_id FROM channel_variants WHERE version IS NULL)
"""


@dataclass(frozen=True)
class Plan:
    """Everything needed to record a routed call; the remembered assignment is settled when
    the record is written (record_call() in migration 0004)."""

    routing: Routing
    draw: Draw
    candidates: tuple[Candidate, ...]


class Resolver:
    """Resolves calls from the layered cache; Postgres is read only on misses."""

    def __init__(self, pool: asyncpg.Pool, snapshot_cache: LayeredCache) -> None:
        self._pool = pool
        self._cache = snapshot_cache

    async def routing(self, number: str) -> Routing | None:
        return await self._cache.get(
            codecs.ROUTING, number, lambda: find_channel(self._pool, number)
        )

    async def warm(self) -> None:
        """Load every channel's routing into L1 from one streamed query, so resolving a call
        costs the same whatever the number of channels (the change-feed resync calls this).

        The snapshots the channels serve come along (drafts are mutable like routings; versions
        would otherwise each cost a first miss). A failure leaves what was read so far in place
        (consistent: the feed listens) and the rest to be loaded on first use.
        """
        started, loaded = time.perf_counter(), 0
        try:
            async with self._pool.acquire() as conn:
                async for routing in channels.all_routings(conn):
                    self._cache.preload(codecs.ROUTING, routing.number, routing)
                    loaded += 1
                snapshots = await conn.fetch(SERVED_SNAPSHOTS)
        except (*DATABASE_UNAVAILABLE, asyncpg.PostgresError) as exc:
            log.warning("routing_warmup_failed", error=type(exc).__name__, loaded=loaded)
            return
        for row in snapshots:
            self._preload_snapshot(Snapshot(*row))
        # The warm-up leaves about a million long-lived objects at 100,000 channels; frozen, the
        # cyclic collector stops re-walking them in every full collection, which otherwise
        # pauses every call in flight for a hundred milliseconds or more.
        gc.freeze()
        log.info(
            "routing_warmup",
            channels=loaded,
            snapshots=len(snapshots),
            seconds=round(time.perf_counter() - started, 3),
        )

    def _preload_snapshot(self, s: Snapshot) -> None:
        if s.version is None:
            self._cache.preload(codecs.DRAFT, s.agent_id, s)
        else:
            self._cache.preload(codecs.VERSION, _version_key(s.agent_id, s.version), s)

    async def snapshot(self, variant: Variant) -> Snapshot:
        agent_id, version = variant.agent_id, variant.version
        if version is None:
            return await self._cache.get(
                codecs.DRAFT, agent_id, lambda: snapshots.load_draft(self._pool, agent_id)
            )
        return await self._cache.get(
            codecs.VERSION,
            _version_key(agent_id, version),
            lambda: snapshots.load_version(self._pool, agent_id, version),
        )

    async def _candidate(self, variant: Variant) -> Candidate:
        s = await self.snapshot(variant)
        return Candidate(variant.label, s.agent_id, s.version, s.draft_revision, s.config_hash)

    async def plan(self, to: str, raw_from: str, provider_call_id: str) -> Plan | Unroutable:
        """How to serve a call to `to` from `raw_from`, or why it cannot be routed."""
        if "\x00" in provider_call_id:  # no provider sends one, and Postgres text cannot hold it
            return Unroutable("malformed")
        try:
            routing = await resolution.route(to, self.routing)
            if isinstance(routing, Unroutable):
                return routing
            d = resolution.draw(routing, raw_from, provider_call_id)
            # Remembering needs every live variant at hand: the remembered one may win.
            live = [v for v in routing.variants if v.weight > 0] if d.remember else [d.drawn]
            # One after the other: on the usual L1 hits no await suspends, and gather would
            # cost a task per variant.
            candidates = [await self._candidate(v) for v in live]
        except (*DATABASE_UNAVAILABLE, StoreError):
            return Unroutable("unavailable")
        return Plan(routing, d, tuple(candidates))

    async def explain(self, to: str, raw_from: str, call_id: str | None) -> dict[str, Any]:
        """The dry run through this worker's cache; records nothing."""
        return await resolution.explain(
            to,
            raw_from,
            call_id,
            routing_of=self.routing,
            snapshot_of=self.snapshot,
            assignment_of=lambda number, key: find_assignment(self._pool, number, key),
        )


def _version_key(agent_id: str, version: int) -> str:
    return f"{agent_id}:{version}"

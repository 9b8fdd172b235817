"""Call-time resolution: number → routing → variant → snapshot, read through the cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from store import cache, resolution, snapshots
from store.calls import Candidate, find_assignment
from store.channels import Routing, Variant, find_channel
from store.errors import StoreError
from store.layered import DATABASE_UNAVAILABLE, LayeredCache
from store.resolution import Unroutable
from store.snapshots import Snapshot


@dataclass(frozen=True)
class Plan:
    """Everything needed to record a routed call; the remembered assignment is settled when
    the record is written (record_call() in migration 0004)."""

    routing: Routing
    caller: str
    key: str
    point: int
    drawn: Variant
    remember: bool
    candidates: tuple[Candidate, ...]


class Resolver:
    """Resolves calls from the layered cache; Postgres is read only on misses."""

    def __init__(self, pool: asyncpg.Pool, snapshot_cache: LayeredCache) -> None:
        self._pool = pool
        self._cache = snapshot_cache

    async def routing(self, number: str) -> Routing | None:
        return await self._cache.get(
            cache.ROUTING, number, lambda: find_channel(self._pool, number)
        )

    async def snapshot(self, variant: Variant) -> Snapshot:
        agent_id, version = variant.agent_id, variant.version
        if version is None:
            return await self._cache.get(
                cache.DRAFT, agent_id, lambda: snapshots.load_draft(self._pool, agent_id)
            )
        return await self._cache.get(
            cache.VERSION,
            f"{agent_id}:{version}",
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
        return Plan(routing, d.caller, d.key, d.point, d.drawn, d.remember, tuple(candidates))

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

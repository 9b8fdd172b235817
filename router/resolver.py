"""The router's Resolver: the call to record (number → routing → draw → candidate snapshots), read
through the layered cache; the decisions themselves are store/call_routing.py's."""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import structlog

from store import call_routing, codecs, snapshots
from store.cache import LayeredCache
from store.call_routing import Unroutable
from store.calls import Candidate, NewCall, find_assignment
from store.channels import Routing, Variant, find_channel
from store.db import DatabaseUnavailable, PostgresGuard
from store.draw import live_variants
from store.errors import StoreError
from store.snapshots import Snapshot

log = structlog.get_logger()

T = TypeVar("T")

# Seconds the warm-up may read for: a generous bound on its normal 2 s per 100,000 channels, so
# a connection cut off mid-way (a partition) gives the feed's resync back instead of holding it.
WARM_UP_BUDGET_S = 30.0


class Resolver:
    """Resolves calls from the layered cache; Postgres is read only on misses, through the
    worker's guard (bounded, and refused at once while Postgres is known to be down: the cache
    then serves what it last held)."""

    def __init__(
        self, pool: asyncpg.Pool, snapshot_cache: LayeredCache, guard: PostgresGuard
    ) -> None:
        self._pool = pool
        self._cache = snapshot_cache
        self._guard = guard

    def _read(self, query: Callable[[asyncpg.Connection], Awaitable[T]]) -> Awaitable[T]:
        return self._guard.read(self._pool, query)

    async def routing(self, number: str) -> Routing | None:
        return await self._cache.get(
            codecs.ROUTING, number, lambda: self._read(lambda conn: find_channel(conn, number))
        )

    async def warm(self) -> bool:
        """Load every channel's routing into L1 from one streamed query, so resolving a call
        costs the same whatever the number of channels (the change-feed resync calls this).
        Whether it loaded them all.

        The snapshots the channels serve come along (drafts are mutable like routings; versions
        would otherwise each cost a first miss). A failure leaves what was read so far in place
        (consistent: the feed listens) and the rest to be loaded on first use.
        """
        started, loaded = time.perf_counter(), 0

        def preload(routing: Routing) -> None:
            nonlocal loaded
            self._cache.preload(codecs.ROUTING, routing.number, routing)
            loaded += 1

        try:
            served = await snapshots.warm_up(self._pool, WARM_UP_BUDGET_S, preload)
        # Whatever failed (Postgres may go away again mid-warm-up, with any error class),
        # the resync goes on: the cache is consistent, only colder.
        except Exception as exc:
            log.warning("routing_warmup_failed", error=type(exc).__name__, loaded=loaded)
            return False
        for snapshot in served:
            self._preload_snapshot(snapshot)
        # The warm-up leaves about a million long-lived objects at 100,000 channels; frozen, the
        # cyclic collector stops re-walking them in every full collection, which otherwise
        # pauses every call in flight for a hundred milliseconds or more.
        gc.freeze()
        log.info(
            "routing_warmup",
            channels=loaded,
            snapshots=len(served),
            seconds=round(time.perf_counter() - started, 3),
        )
        return True

    def _preload_snapshot(self, s: Snapshot) -> None:
        if s.version is None:
            self._cache.preload(codecs.DRAFT, s.agent_id, s)
        else:
            self._cache.preload(codecs.VERSION, _version_key(s.agent_id, s.version), s)

    async def snapshot(self, variant: Variant) -> Snapshot:
        agent_id, version = variant.agent_id, variant.version
        if version is None:
            return await self._cache.get(
                codecs.DRAFT,
                agent_id,
                lambda: self._read(lambda conn: snapshots.load_draft(conn, agent_id)),
            )
        return await self._cache.get(
            codecs.VERSION,
            _version_key(agent_id, version),
            lambda: self._read(lambda conn: snapshots.load_version(conn, agent_id, version)),
        )

    async def _candidate(self, variant: Variant) -> Candidate:
        s = await self.snapshot(variant)
        return Candidate(variant.label, s.agent_id, s.version, s.draft_revision, s.config_hash)

    async def plan(
        self, call_id: str, provider: str, to: str, raw_from: str, provider_call_id: str
    ) -> NewCall | Unroutable:
        """The call to record for a call to `to` from `raw_from`, with what it may be served
        (the remembered variant is settled when it is recorded: RECORD_CALLS in
        store/calls.py), or why it cannot be routed."""
        if "\x00" in provider_call_id:  # no provider sends one, and Postgres text cannot hold it
            return Unroutable("malformed")
        try:
            routing = await call_routing.route(to, self.routing)
            if isinstance(routing, Unroutable):
                return routing
            d = call_routing.draw(routing, raw_from, provider_call_id)
            # Remembering needs every live variant at hand: the remembered one may win.
            live = live_variants(routing.variants) if d.remember else [d.drawn]
            # One after the other: on the usual L1 hits no await suspends, and gather would
            # cost a task per variant.
            candidates = [await self._candidate(v) for v in live]
        except (DatabaseUnavailable, StoreError) as exc:
            # Nothing cached to fall back on: say which lookup failed and why, as a known
            # number getting the fallback is what an operator will be asked about.
            log.warning(
                "routing_unavailable",
                number=to,
                error=type(exc).__name__,
                cause=type(exc.__cause__).__name__ if exc.__cause__ else None,
                message=str(exc),
            )
            return Unroutable("unavailable")
        return NewCall(
            call_id,
            provider,
            provider_call_id,
            routing.number,
            d.caller,
            routing.revision,
            datetime.now(UTC),
            d.drawn.label,
            d.remember,
            tuple(candidates),
        )

    async def explain(
        self,
        to: str,
        raw_from: str,
        call_id: str | None,
        visible: Callable[[Routing | None], Routing | None],
    ) -> dict[str, Any]:
        """The dry run through this worker's cache, with a routing as `visible` lets the caller
        know it (None: as if unknown); records nothing."""

        async def routing_of(number: str) -> Routing | None:
            return visible(await self.routing(number))

        return await call_routing.explain(
            to,
            raw_from,
            call_id,
            routing_of=routing_of,
            snapshot_of=self.snapshot,
            assignment_of=lambda number, key: self._read(
                lambda conn: find_assignment(conn, number, key)
            ),
        )


def _version_key(agent_id: str, version: int) -> str:
    return f"{agent_id}:{version}"

"""Call-time resolution: number → routing → variant → snapshot, read through the cache."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import asyncpg

from router.draw import SCALE, draw_point, keep_or_redraw, pick
from store import cache, snapshots
from store.calls import Candidate, find_assignment
from store.channels import Routing, Variant, find_channel
from store.errors import StoreError
from store.layered import DATABASE_UNAVAILABLE, LayeredCache
from store.numbers import normalize_e164
from store.snapshots import Snapshot

MAX_FROM_CHARS = 64
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Unroutable:
    """Why a call gets the fallback: invalid_number, unknown_number, unrouted or unavailable."""

    reason: str


@dataclass(frozen=True)
class Plan:
    """Everything needed to record a routed call; the remembered assignment is settled when
    the record is written (store/calls.py RECORD_CALL)."""

    routing: Routing
    caller: str
    key: str
    point: int
    drawn: Variant
    remember: bool
    candidates: tuple[Candidate, ...]


def caller_of(raw_from: str) -> str:
    """The caller as recorded: E.164 when it is a number, else the printable part of what the
    provider sent (Postgres text cannot hold NUL; logs and the console want no controls)."""
    printable = "".join(c for c in raw_from[: MAX_FROM_CHARS * 4] if c.isprintable())
    return normalize_e164(raw_from) or printable.strip()[:MAX_FROM_CHARS] or ANONYMOUS


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

    async def _routed(self, to: str) -> Routing | Unroutable:
        number = normalize_e164(to)
        if number is None:
            return Unroutable("invalid_number")
        routing = await self.routing(number)
        if routing is None:
            return Unroutable("unknown_number")
        if not any(v.weight > 0 for v in routing.variants):
            return Unroutable("unrouted")
        return routing

    async def plan(self, to: str, raw_from: str, provider_call_id: str) -> Plan | Unroutable:
        """How to serve a call to `to` from `raw_from`, or why it cannot be routed."""
        if "\x00" in provider_call_id:  # no provider sends one, and Postgres text cannot hold it
            return Unroutable("malformed")
        try:
            routing = await self._routed(to)
            if isinstance(routing, Unroutable):
                return routing
            caller = caller_of(raw_from)
            remember = routing.sticky == "caller" and normalize_e164(raw_from) is not None
            key = caller if remember else provider_call_id
            point = draw_point(routing.salt, key)
            drawn = pick(routing.variants, point)
            # Remembering needs every live variant at hand: the remembered one may win.
            live = [v for v in routing.variants if v.weight > 0] if remember else [drawn]
            # One after the other: on the usual L1 hits no await suspends, and gather would
            # cost a task per variant.
            candidates = [await self._candidate(v) for v in live]
        except (*DATABASE_UNAVAILABLE, StoreError):
            return Unroutable("unavailable")
        return Plan(routing, caller, key, point, drawn, remember, tuple(candidates))

    async def explain(self, to: str, raw_from: str, call_id: str | None) -> dict[str, Any]:
        """The dry run: the decision a call would get now, and why. Records nothing."""
        routing = await self._routed(to)
        if isinstance(routing, Unroutable):
            return {"to": to, "from": raw_from, "rule": "fallback", "reason": routing.reason}
        remember = routing.sticky == "caller" and normalize_e164(raw_from) is not None
        key = caller_of(raw_from) if remember else call_id or "dry-run-" + secrets.token_hex(8)
        point = draw_point(routing.salt, key)
        drawn = pick(routing.variants, point)
        remembered = await find_assignment(self._pool, routing.number, key) if remember else None
        live = [v for v in routing.variants if v.weight > 0]
        chosen = keep_or_redraw(remembered, drawn, live)
        if remembered is not None and chosen.label == remembered:
            rule = "remembered"
        else:
            rule = "redraw" if remembered is not None else "draw"
        served = await self.snapshot(chosen)
        return {
            "to": to,
            "from": raw_from,
            "channel": routing.number,
            "routing_revision": routing.revision,
            "sticky": routing.sticky,
            "key": key,
            "u": point / SCALE,
            "rule": rule,
            "remembered": remembered,
            "drawn": drawn.label,
            "variant": chosen.label,
            "agent_id": served.agent_id,
            "version": served.version,
            "draft_revision": served.draft_revision,
            "config_hash": served.config_hash,
            "weights": {v.label: v.weight for v in routing.variants},
        }

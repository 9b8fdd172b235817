"""Routing decisions shared by the router's hot path and the dry runs of both services: which
channel a dialled number is, which variant a call draws, and why."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from store.channels import Routing, Variant
from store.draw import SCALE, draw_point, keep_or_redraw, pick
from store.numbers import normalize_e164
from store.snapshots import Snapshot

MAX_FROM_CHARS = 64
ANONYMOUS = "anonymous"

RoutingSource = Callable[[str], Awaitable[Routing | None]]
SnapshotSource = Callable[[Variant], Awaitable[Snapshot]]
AssignmentSource = Callable[[str, str], Awaitable[str | None]]


@dataclass(frozen=True)
class Unroutable:
    """Why a call gets the fallback: invalid_number, unknown_number, unrouted, malformed or
    unavailable."""

    reason: str


class Draw(NamedTuple):
    """A call's draw on a channel: the key it hashed and the variant it landed on. With
    `remember`, the caller's remembered variant wins over `drawn` while it is live."""

    caller: str
    key: str
    remember: bool
    point: int
    drawn: Variant


def caller_of(raw_from: str) -> str:
    """The caller as recorded: E.164 when it is a number, else the printable part of what the
    provider sent (Postgres text cannot hold NUL; logs and the console want no controls)."""
    number = normalize_e164(raw_from)
    if number is not None:
        return number
    printable = "".join(c for c in raw_from[: MAX_FROM_CHARS * 4] if c.isprintable())
    return printable.strip()[:MAX_FROM_CHARS] or ANONYMOUS


async def route(to: str, routing_of: RoutingSource) -> Routing | Unroutable:
    """The routing of the dialled number, or why there is none to follow."""
    number = normalize_e164(to)
    if number is None:
        return Unroutable("invalid_number")
    routing = await routing_of(number)
    if routing is None:
        return Unroutable("unknown_number")
    if not any(v.weight > 0 for v in routing.variants):
        return Unroutable("unrouted")
    return routing


def draw(routing: Routing, raw_from: str, call_key: str) -> Draw:
    """Draw per docs/design.md section 4 (step 3): by caller when the channel is sticky by
    caller and the caller is a real number (an anonymous caller cannot be remembered), else by
    call."""
    caller = caller_of(raw_from)
    remember = routing.sticky == "caller" and normalize_e164(raw_from) is not None
    key = caller if remember else call_key
    point = draw_point(routing.salt, key)
    return Draw(caller, key, remember, point, pick(routing.variants, point))


async def explain(
    to: str,
    raw_from: str,
    call_id: str | None,
    *,
    routing_of: RoutingSource,
    snapshot_of: SnapshotSource,
    assignment_of: AssignmentSource,
) -> dict[str, Any]:
    """The dry run: the decision a call would get now, and why. Records nothing."""
    routing = await route(to, routing_of)
    if isinstance(routing, Unroutable):
        return {"to": to, "from": raw_from, "rule": "fallback", "reason": routing.reason}
    d = draw(routing, raw_from, call_id or "dry-run-" + secrets.token_hex(8))
    remembered = await assignment_of(routing.number, d.key) if d.remember else None
    chosen = keep_or_redraw(remembered, d.drawn, routing.variants)
    if remembered is None:
        rule = "draw"
    else:
        rule = "remembered" if chosen.label == remembered else "redraw"
    served = await snapshot_of(chosen)
    return {
        "to": to,
        "from": raw_from,
        "channel": routing.number,
        "routing_revision": routing.revision,
        "sticky": routing.sticky,
        "key": d.key,
        "u": d.point / SCALE,
        "rule": rule,
        "remembered": remembered,
        "drawn": d.drawn.label,
        "variant": chosen.label,
        "agent_id": served.agent_id,
        "version": served.version,
        "draft_revision": served.draft_revision,
        "config_hash": served.config_hash,
        "weights": {v.label: v.weight for v in routing.variants},
    }

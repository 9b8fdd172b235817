"""Progressive rollouts (docs/design.md section 13): a channel's traffic moved onto a target
version through steps of share, each held for a time and a number of analysed calls, rolled
back at once when a guardrail breaks, advanced by `tick` without a person.

Every routing change a rollout makes goes through `channels.apply_routing`, the path of a manual
pin (revision check, change feed, audit entry), in the same transaction as the rollout's own
state, so a step is applied exactly when it is recorded.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

from store import analytics, audit, channels, guardrails
from store.channels import Routing, Variant
from store.errors import ChannelNotFound, Conflict, NotFound, RevisionConflict
from store.pagination import decode_cursor, page

State = Literal["running", "paused", "completed", "rolled_back", "aborted"]
# What happened to a rollout (its history's entries; audited as `rollout.<kind>`).
EventKind = Literal["start", "step", "pause", "resume", "rollback", "abort", "promote"]
ACTIVE: tuple[State, ...] = ("running", "paused")
# The actor of what the scheduler does on its own (steps, rollbacks, pauses it notices).
ROLLOUT_ACTOR = "rollout"
FULL_SHARE = 100
DEFAULT_STEPS = (5, 25, 50, 100)
MAX_STEPS = 20
# An hour per step unless told: long enough for a working day's traffic pattern to show.
DEFAULT_HOLD_S = 3600
# A month: longer holds are a pause in all but name.
MAX_HOLD_S = 30 * 24 * 3600
DEFAULT_MIN_CALLS = analytics.MIN_SAMPLE_SIZE
MAX_MIN_CALLS = 1_000_000
DEFAULT_LABEL = "rollout"
# The draw's 2^64, for the SQL that re-derives a caller's draw point.
DRAW_SCALE = 1 << 64

COLUMNS = """
id, number, label, agent_id, version, steps, hold_s, min_calls, rules, start_variants,
start_sticky, state, step, step_started_at, channel_revision, reason, created_at, created_by,
ended_at
"""
INSERT_ROLLOUT = f"""
INSERT INTO rollouts (number, label, agent_id, version, steps, hold_s, min_calls, rules,
                      start_variants, start_sticky, state, step, step_started_at,
                      channel_revision, created_at, created_by)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'running', 0, $11, $12, $11, $13)
RETURNING {COLUMNS}
"""  # noqa: S608 (module constants only)
SELECT_ACTIVE = (
    f"SELECT {COLUMNS} FROM rollouts WHERE number = $1 AND state IN ('running', 'paused')"  # noqa: S608
)
LOCK_ROLLOUT = f"SELECT {COLUMNS} FROM rollouts WHERE id = $1 AND number = $2 FOR UPDATE"  # noqa: S608
# The scheduler's next running rollout after $1 that no other process is working on.
NEXT_RUNNING = f"""
SELECT {COLUMNS} FROM rollouts WHERE state = 'running' AND id > $1
ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
"""  # noqa: S608
LIST_ROLLOUTS = f"""
SELECT {COLUMNS} FROM rollouts
WHERE number = $1 AND ($2::bigint IS NULL OR id < $2)
ORDER BY id DESC LIMIT $3
"""  # noqa: S608
# The latest rollout of every channel that has had one: the metrics' view.
LATEST_PER_CHANNEL = f"""
SELECT DISTINCT ON (number) {COLUMNS} FROM rollouts ORDER BY number, id DESC
"""  # noqa: S608
UPDATE_ROLLOUT = """
UPDATE rollouts
SET state = $2, step = $3, step_started_at = $4, channel_revision = $5, reason = $6,
    ended_at = $7
WHERE id = $1
"""
INSERT_EVENT = """
INSERT INTO rollout_events (rollout_id, at, actor, kind, step, share, reason, figures)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
SELECT_EVENTS = """
SELECT rollout_id, at, actor, kind, step, share, reason, figures
FROM rollout_events WHERE rollout_id = ANY($1::bigint[]) ORDER BY id
"""
# Callers remembered on another variant whose draw now lands in the target's interval (the
# first, [0, target/total) of the draw's range) move to the target: without this, a caller
# remembered on a starting variant would stay there while the target's share grows over them.
# The draw point is store/draw.py's (the first 8 bytes of sha256(salt:caller), unsigned).
MOVE_CALLERS_TO_TARGET = """
UPDATE caller_assignments a SET label = $2, updated_at = now()
FROM (SELECT caller,
             ('x' || encode(substring(sha256(convert_to($3 || ':' || caller, 'UTF8'))
                                      FROM 1 FOR 8), 'hex'))::bit(64)::bigint AS h
      FROM caller_assignments WHERE number = $1 AND label <> $2) d
WHERE a.number = $1 AND a.caller = d.caller
  AND (d.h::numeric + CASE WHEN d.h < 0 THEN $6::numeric ELSE 0 END) * $4::numeric
      < $5::numeric * $6::numeric
"""


class RolloutNotFound(NotFound):
    code = "rollout_not_found"


class RolloutConflict(Conflict):
    """The rollout (or the channel) is not in a state that allows the request."""

    code = "rollout_conflict"


@dataclass(frozen=True)
class Plan:
    """What a new rollout is asked to do (validated by store.schemas.parse_rollout)."""

    label: str
    agent_id: str
    version: int | None
    steps: tuple[int, ...]
    hold_s: int
    min_calls: int
    rules: tuple[guardrails.Rule, ...]


@dataclass(frozen=True)
class Event:
    rollout_id: int
    at: datetime
    actor: str
    kind: str
    step: int
    share: int
    reason: str | None
    figures: dict[str, Any] | None

    def public(self) -> dict[str, Any]:
        data = asdict(self)
        del data["rollout_id"]
        return data


@dataclass(frozen=True)
class Rollout:
    id: int
    number: str
    label: str
    agent_id: str
    version: int | None
    steps: tuple[int, ...]
    hold_s: int
    min_calls: int
    rules: tuple[guardrails.Rule, ...]
    start_variants: tuple[Variant, ...]
    start_sticky: str
    state: str
    step: int
    step_started_at: datetime
    channel_revision: int
    reason: str | None
    created_at: datetime
    created_by: str
    ended_at: datetime | None
    events: tuple[Event, ...] = field(default=())

    @property
    def share(self) -> int:
        """The target's percent of the traffic at the live step."""
        return self.steps[self.step]

    def decided(self, label: str) -> dict[str, Any]:
        """The dry run's note: this rollout at this step decided a call served `label`."""
        return {
            "id": self.id,
            "state": self.state,
            "step": self.step,
            "share": self.share,
            "side": "target" if label == self.label else "start",
        }

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "number": self.number,
            "state": self.state,
            "target": {"label": self.label, "agent_id": self.agent_id, "version": self.version},
            "steps": list(self.steps),
            "step": self.step,
            "share": self.share,
            "hold_s": self.hold_s,
            "min_calls": self.min_calls,
            "rules": [asdict(r) for r in self.rules],
            "start": {
                "variants": [asdict(v) for v in self.start_variants],
                "sticky": self.start_sticky,
            },
            "step_started_at": self.step_started_at,
            "hold_until": self.step_started_at + timedelta(seconds=self.hold_s),
            "reason": self.reason,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "ended_at": self.ended_at,
            "events": [e.public() for e in self.events],
        }


@dataclass(frozen=True)
class Figures:
    """What a decision was made on: calls per side since the rollout began, the target's
    analysed calls in the live step, and the target's outcomes the guardrails read."""

    target_calls: int
    target_analysed: int
    baseline_calls: int
    baseline_analysed: int
    step_analysed: int
    target: analytics.Outcomes

    def public(self) -> dict[str, Any]:
        return {
            "target": {"calls": self.target_calls, "analysed": self.target_analysed},
            "baseline": {"calls": self.baseline_calls, "analysed": self.baseline_analysed},
            "step_analysed": self.step_analysed,
        }


@dataclass(frozen=True)
class Outcome:
    """What one scheduler visit (or an operator's request) did to a rollout."""

    rollout: Rollout
    kind: str  # step, rollback, pause, complete, or "" when nothing was due
    trip: guardrails.Trip | None = None


def _rollout(row: asyncpg.Record, events: tuple[Event, ...] = ()) -> Rollout:
    return Rollout(
        id=row["id"],
        number=row["number"],
        label=row["label"],
        agent_id=row["agent_id"],
        version=row["version"],
        steps=tuple(row["steps"]),
        hold_s=row["hold_s"],
        min_calls=row["min_calls"],
        rules=tuple(guardrails.Rule(**r) for r in row["rules"]),
        start_variants=tuple(Variant(**v) for v in row["start_variants"]),
        start_sticky=row["start_sticky"],
        state=row["state"],
        step=row["step"],
        step_started_at=row["step_started_at"],
        channel_revision=row["channel_revision"],
        reason=row["reason"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        ended_at=row["ended_at"],
        events=events,
    )


# --- the routing at each step (pure) ----------------------------------------------------------


def step_variants(start: tuple[Variant, ...], target: Variant, share: int) -> tuple[Variant, ...]:
    """The channel's variants with `share` percent on `target`, the rest split among the
    starting variants in their proportions.

    The target comes first, so its interval of the draw, [0, share), only grows from one end as
    the share does: a caller it once took stays on it. Weights are exact (the target's is
    share x the starting total, each starting one's x (100 - share)), reduced by their gcd.
    """
    if share >= FULL_SHARE:
        return (replace(target, weight=channels.SHORTHAND_WEIGHT),)
    total = sum(v.weight for v in start)
    weights = [share * total] + [v.weight * (FULL_SHARE - share) for v in start]
    divisor = math.gcd(*weights)
    return tuple(
        replace(v, weight=w // divisor) for v, w in zip((target, *start), weights, strict=True)
    )


def _target(r: Rollout) -> Variant:
    return Variant(r.label, r.agent_id, r.version, 0)


# --- reads ------------------------------------------------------------------------------------


async def _with_events(conn: asyncpg.Pool | asyncpg.Connection, rows: list[Any]) -> list[Rollout]:
    events: dict[int, list[Event]] = {}
    for e in await conn.fetch(SELECT_EVENTS, [r["id"] for r in rows]):
        events.setdefault(e["rollout_id"], []).append(Event(**dict(e)))
    return [_rollout(r, tuple(events.get(r["id"], []))) for r in rows]


async def active_rollout(conn: asyncpg.Pool | asyncpg.Connection, number: str) -> Rollout | None:
    """The channel's running or paused rollout, with its events."""
    row = await conn.fetchrow(SELECT_ACTIVE, number)
    return (await _with_events(conn, [row]))[0] if row else None


async def name_in_dry_run(
    explanation: dict[str, Any], active: Callable[[str], Awaitable[Rollout | None]]
) -> dict[str, Any]:
    """A dry run's `explanation` with, when its channel has a running or paused rollout
    (`active(number)`), the rollout and step that decided its variant (`rollout`)."""
    rollout = await active(explanation.get("channel", ""))
    if rollout is not None:
        explanation["rollout"] = rollout.decided(explanation["variant"])
    return explanation


async def list_rollouts(
    pool: asyncpg.Pool, number: str, *, limit: int, cursor: str | None = None
) -> tuple[list[Rollout], str | None]:
    """A channel's rollouts, newest first, each with its events; ChannelNotFound if no channel
    and no rollout (a deleted channel takes its rollouts with it)."""
    after = decode_cursor(cursor, (int,))
    rows = await pool.fetch(LIST_ROLLOUTS, number, after[0] if after else None, limit + 1)
    if not rows and after is None and await channels.find_channel(pool, number) is None:
        raise ChannelNotFound(f"no channel {number}")
    return page(await _with_events(pool, rows), limit, lambda r: [r.id])


async def figures(pool: asyncpg.Pool, r: Rollout) -> Figures:
    """Calls per side since the rollout began and the target's analysed calls this step,
    read through the analytics' per-variant outcomes."""
    since_start = await analytics.variant_outcomes(pool, r.number, r.created_at, analytics.LATEST)
    this_step = await analytics.variant_outcomes(
        pool, r.number, r.step_started_at, analytics.LATEST
    )
    target = _target_outcomes(r, since_start)
    baseline = [g.outcomes for g in since_start if not _is_target(r, g)]
    return Figures(
        target_calls=target.calls,
        target_analysed=target.analysed,
        baseline_calls=sum(o.calls for o in baseline),
        baseline_analysed=sum(o.analysed for o in baseline),
        step_analysed=_target_outcomes(r, this_step).analysed,
        target=target,
    )


def _is_target(r: Rollout, group: analytics.VariantOutcomes) -> bool:
    return (group.variant, group.agent_id, group.version) == (r.label, r.agent_id, r.version)


def _target_outcomes(r: Rollout, groups: list[analytics.VariantOutcomes]) -> analytics.Outcomes:
    return next((g.outcomes for g in groups if _is_target(r, g)), analytics.Outcomes())


def first_breach(r: Rollout, outcomes: analytics.Outcomes) -> guardrails.Trip | None:
    """The first of the rollout's rules the target confidently breaks (guardrails.breach)."""
    found = (guardrails.breach(r.label, rule, outcomes) for rule in r.rules)
    return next((t for t in found if t is not None), None)


def progress(r: Rollout, f: Figures) -> dict[str, Any]:
    """The live view of a rollout: calls per side, what the step still waits for, and each
    guardrail's status."""
    return {
        **f.public(),
        "calls_needed": max(0, r.min_calls - f.step_analysed),
        "target_outcomes": f.target.public(),
        "guardrails": [
            {**asdict(rule), "breached": guardrails.breach(r.label, rule, f.target) is not None}
            for rule in r.rules
        ],
    }


# --- changes ----------------------------------------------------------------------------------


async def _record(
    conn: asyncpg.Connection,
    r: Rollout,
    *,
    now: datetime,
    actor: str,
    kind: str,
    reason: str | None,
    figures: dict[str, Any] | None = None,
) -> None:
    await conn.execute(INSERT_EVENT, r.id, now, actor, kind, r.step, r.share, reason, figures)


async def _save(conn: asyncpg.Connection, r: Rollout) -> None:
    await conn.execute(
        UPDATE_ROLLOUT,
        r.id,
        r.state,
        r.step,
        r.step_started_at,
        r.channel_revision,
        r.reason,
        r.ended_at,
    )


def _note(r: Rollout, kind: str, reason: str, figures: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "rollout": {
            "id": r.id,
            "kind": kind,
            "step": r.step,
            "share": r.share,
            "reason": reason,
            "figures": figures,
        }
    }


async def _route(
    conn: asyncpg.Connection,
    r: Rollout,
    variants: tuple[Variant, ...],
    *,
    actor: str,
    kind: str,
    reason: str,
    figures: dict[str, Any] | None,
    if_revision: int | None,
) -> Routing:
    """Apply one of the rollout's routings through the manual pin's path, audited as
    `rollout.<kind>` with the reason and figures."""
    return await channels.apply_routing(
        conn,
        r.number,
        variants,
        r.start_sticky,
        actor,
        action=f"rollout.{kind}",
        audit_note=_note(r, kind, reason, figures),
        if_revision=if_revision,
        target_path=lambda _: "target",
    )


async def _move_to_step(
    conn: asyncpg.Connection,
    r: Rollout,
    step: int,
    *,
    now: datetime,
    actor: str,
    kind: str,
    reason: str,
    figures: dict[str, Any] | None,
    if_revision: int | None,
) -> Rollout:
    """Route the channel to the rollout's `step` (completing it at 100%); recorded."""
    moved = replace(r, step=step, step_started_at=now)
    routing = await _route(
        conn,
        moved,
        step_variants(r.start_variants, _target(r), moved.share),
        actor=actor,
        kind=kind,
        reason=reason,
        figures=figures,
        if_revision=if_revision,
    )
    if routing.sticky == "caller":
        target = routing.variants[0]
        await conn.execute(
            MOVE_CALLERS_TO_TARGET,
            r.number,
            r.label,
            routing.salt,
            sum(v.weight for v in routing.variants),
            target.weight,
            DRAW_SCALE,
        )
    done = moved.share >= FULL_SHARE
    moved = replace(
        moved,
        channel_revision=routing.revision,
        state="completed" if done else moved.state,
        reason=reason,
        ended_at=now if done else None,
    )
    await _save(conn, moved)
    await _record(conn, moved, now=now, actor=actor, kind=kind, reason=reason, figures=figures)
    return moved


async def _back_to_start(
    conn: asyncpg.Connection,
    r: Rollout,
    *,
    now: datetime,
    actor: str,
    state: State,
    kind: str,
    reason: str,
    figures: dict[str, Any] | None,
    if_revision: int | None,
) -> Rollout:
    """Route the channel back to where the rollout began and end it: callers remembered on the
    target find it gone and draw again among the starting variants."""
    routing = await _route(
        conn,
        r,
        r.start_variants,
        actor=actor,
        kind=kind,
        reason=reason,
        figures=figures,
        if_revision=if_revision,
    )
    ended = replace(r, state=state, channel_revision=routing.revision, reason=reason, ended_at=now)
    await _save(conn, ended)
    await _record(conn, ended, now=now, actor=actor, kind=kind, reason=reason, figures=figures)
    return ended


async def _pause(
    conn: asyncpg.Connection, r: Rollout, *, now: datetime, actor: str, reason: str
) -> Rollout:
    paused = replace(r, state="paused", reason=reason)
    await _save(conn, paused)
    await _record(conn, paused, now=now, actor=actor, kind="pause", reason=reason)
    await audit.record(
        conn, actor, "rollout.pause", channel=r.number, after=_note(paused, "pause", reason, None)
    )
    return paused


async def start(pool: asyncpg.Pool, number: str, plan: Plan, actor: str, now: datetime) -> Rollout:
    """Begin a rollout on a channel from its current routing: the first step is applied at
    once. Conflict when the channel already has one in progress or routes no calls."""
    async with pool.acquire() as conn, conn.transaction():
        before = await channels.find_channel(conn, number)
        if before is None:
            raise ChannelNotFound(f"no channel {number}")
        if await conn.fetchrow(SELECT_ACTIVE, number) is not None:
            raise RolloutConflict(f"channel {number} already has a rollout in progress")
        if sum(v.weight for v in before.variants) <= 0:
            raise RolloutConflict(f"channel {number} routes no calls to roll out from")
        if plan.label in {v.label for v in before.variants}:
            raise channels.routing_error(
                "label", f"the channel already has a variant {plan.label!r}"
            )
        await channels.check_targets(
            conn, (Variant(plan.label, plan.agent_id, plan.version, 0),), lambda _: "target"
        )
        row = await conn.fetchrow(
            INSERT_ROLLOUT,
            number,
            plan.label,
            plan.agent_id,
            plan.version,
            list(plan.steps),
            plan.hold_s,
            plan.min_calls,
            [asdict(rule) for rule in plan.rules],
            [asdict(v) for v in before.variants],
            before.sticky,
            now,
            before.revision,
            actor,
        )
        created = _rollout(row)
        begun = await _move_to_step(
            conn,
            created,
            0,
            now=now,
            actor=actor,
            kind="start",
            reason="started",
            figures=None,
            if_revision=before.revision,
        )
        return await _reread(conn, begun)


async def _reread(conn: asyncpg.Connection, r: Rollout) -> Rollout:
    """The rollout as the transaction left it, with its events."""
    return (await _with_events(conn, [await conn.fetchrow(LOCK_ROLLOUT, r.id, r.number)]))[0]


Action = Literal["pause", "resume", "abort", "promote"]


async def act(
    pool: asyncpg.Pool, number: str, rollout_id: int, action: Action, actor: str, now: datetime
) -> Rollout:
    """An operator's request on a rollout in progress: pause it where it is, resume it (its
    step's routing re-applied if the channel was changed meanwhile; the hold starts again),
    abort it (back to the starting routing) or promote it (the target takes every call)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(LOCK_ROLLOUT, rollout_id, number)
        if row is None:
            raise RolloutNotFound(f"no rollout {rollout_id} on channel {number}")
        r = _rollout(row)
        allowed = (
            ("running",) if action == "pause" else ("paused",) if action == "resume" else ACTIVE
        )
        if r.state not in allowed:
            raise RolloutConflict(f"rollout {rollout_id} is {r.state}; cannot {action} it")
        reason = f"{action} by {actor}"
        if action == "pause":
            await _pause(conn, r, now=now, actor=actor, reason=reason)
        elif action == "abort":
            await _back_to_start(
                conn,
                r,
                now=now,
                actor=actor,
                state="aborted",
                kind="abort",
                reason=reason,
                figures=None,
                if_revision=None,
            )
        elif action == "promote":
            await _move_to_step(
                conn,
                r,
                len(r.steps) - 1,
                now=now,
                actor=actor,
                kind="promote",
                reason=reason,
                figures=None,
                if_revision=None,
            )
        else:
            await _resume(conn, r, now=now, actor=actor, reason=reason)
        return await _reread(conn, r)


async def _resume(
    conn: asyncpg.Connection, r: Rollout, *, now: datetime, actor: str, reason: str
) -> None:
    running = replace(r, state="running")
    current = await channels.find_channel(conn, r.number)
    if current is not None and current.revision == r.channel_revision:
        running = replace(running, step_started_at=now, reason=reason)
        await _save(conn, running)
        await _record(conn, running, now=now, actor=actor, kind="resume", reason=reason)
        await audit.record(
            conn,
            actor,
            "rollout.resume",
            channel=r.number,
            after=_note(running, "resume", reason, None),
        )
        return
    await _move_to_step(
        conn,
        running,
        r.step,
        now=now,
        actor=actor,
        kind="resume",
        reason=reason,
        figures=None,
        if_revision=None,
    )


# --- the scheduler ----------------------------------------------------------------------------


async def tick(pool: asyncpg.Pool, now: datetime) -> list[Outcome]:
    """One scheduler pass at time `now` over every running rollout, each in a transaction of
    its own holding its row (FOR UPDATE SKIP LOCKED): a rollout another process is visiting is
    skipped, and one it has just visited is read as that visit left it, so two processes never
    take the same step twice.

    Each visit advances at most one step, and the next step's hold counts from `now`: after
    downtime an overdue rollout takes its steps one by one, each step's guardrails checked on
    the calls of its own hold.
    """
    outcomes: list[Outcome] = []
    last = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(NEXT_RUNNING, last)
            if row is None:
                return outcomes
            r = _rollout(row)
            last = r.id
            outcomes.append(await _visit(pool, conn, r, now))


async def _visit(
    pool: asyncpg.Pool, conn: asyncpg.Connection, r: Rollout, now: datetime
) -> Outcome:
    """Pause when someone else changed the channel; roll back when a guardrail breaks; else
    take the next step once the hold time and the analysed calls are there."""
    routing = await channels.find_channel(conn, r.number)
    f = await figures(pool, r)
    trip = first_breach(r, f.target)
    if routing is None or routing.revision != r.channel_revision:
        return await _changed_by_someone(conn, r, routing, now)
    try:
        if trip is not None:
            reason = (
                f"guardrail broken: {trip.rule.metric} {trip.rule.op} {trip.rule.threshold}"
                f" (observed {trip.observed:.3g}, 95% interval {trip.ci[0]:.3g}..{trip.ci[1]:.3g},"
                f" {trip.calls} calls)"
            )
            ended = await _back_to_start(
                conn,
                r,
                now=now,
                actor=ROLLOUT_ACTOR,
                state="rolled_back",
                kind="rollback",
                reason=reason,
                figures={**f.public(), "trip": trip.note()},
                if_revision=r.channel_revision,
            )
            return Outcome(ended, "rollback", trip)
        if now < r.step_started_at + timedelta(seconds=r.hold_s) or f.step_analysed < r.min_calls:
            return Outcome(r, "")
        reason = (
            f"step {r.step + 1} held {r.hold_s} s with {f.step_analysed} analysed calls;"
            " no guardrail broken"
        )
        moved = await _move_to_step(
            conn,
            r,
            r.step + 1,
            now=now,
            actor=ROLLOUT_ACTOR,
            kind="step",
            reason=reason,
            figures=f.public(),
            if_revision=r.channel_revision,
        )
        return Outcome(moved, "complete" if moved.state == "completed" else "step")
    except RevisionConflict:
        return await _changed_by_someone(conn, r, await channels.find_channel(conn, r.number), now)


async def _changed_by_someone(
    conn: asyncpg.Connection, r: Rollout, current: Routing | None, now: datetime
) -> Outcome:
    """An admin (or the A/B guardrails) changed the channel: their routing stands, and the
    rollout pauses rather than fight it."""
    who = f"{current.updated_by} at revision {current.revision}" if current else "deletion"
    reason = f"channel changed by {who}"
    return Outcome(await _pause(conn, r, now=now, actor=ROLLOUT_ACTOR, reason=reason), "pause")


async def latest_per_channel(pool: asyncpg.Pool) -> list[Rollout]:
    """Every channel's latest rollout (without events): what the metrics show."""
    return [_rollout(row) for row in await pool.fetch(LATEST_PER_CHANNEL)]

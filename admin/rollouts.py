"""Admin API handlers for progressive rollouts, and the scheduler that advances them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from admin import schemas as out
from admin.metrics import METRICS, AdminMetrics
from httpkit import query
from httpkit.endpoint import endpoint
from httpkit.errors import ApiError
from httpkit.json import json_response, read_json
from httpkit.keys import POOL, PRINCIPAL, SETTINGS
from httpkit.tasks import cancel_and_wait
from store import channels, rollouts, schemas
from store.db import every

log = structlog.get_logger()


def _now() -> datetime:
    return datetime.now(UTC)


def _rollout_id(request: web.Request) -> int:
    rollout_id = query.decimal(request.match_info["rollout_id"])
    if rollout_id is None:
        raise ApiError(404, "rollout_not_found", "a rollout is named by its id")
    return rollout_id


async def current_json(pool: asyncpg.Pool, r: rollouts.Rollout) -> dict[str, Any]:
    """A rollout in progress with its live progress."""
    return {**r.public(), "progress": rollouts.progress(r, await rollouts.figures(pool, r))}


def _log(outcome: rollouts.Outcome) -> None:
    r = outcome.rollout
    log.info(
        "rollout_" + outcome.kind,
        rollout_id=r.id,
        channel=r.number,
        agent_id=r.agent_id,
        version=r.version,
        step=r.step,
        share=r.share,
        state=r.state,
        reason=r.reason,
    )


def _count(metrics: AdminMetrics, outcome: rollouts.Outcome) -> None:
    if outcome.kind == "rollback":
        metrics.rollout_rollbacks.labels(outcome.rollout.number).inc()


@endpoint(
    "Start a rollout: move the channel's calls onto a target step by step, gated by guardrails",
    role="publisher",
    path=out.ChannelPath,
    body=schemas.StartRollout,
    responses={201: out.Rollout},
    errors=(404, 409, 412),
)
async def start_rollout(request: web.Request) -> web.Response:
    number = channels.parse_number(request.match_info["number"])
    plan = schemas.parse_rollout(await read_json(request))
    started = await rollouts.start(request.app[POOL], number, plan, request[PRINCIPAL].name, _now())
    _log(rollouts.Outcome(started, "start"))
    return json_response(started.public(), status=201)


@endpoint(
    "A channel's rollout in progress (with calls per side and guardrail status) and history",
    role="viewer",
    path=out.ChannelPath,
    query=out.PageQuery,
    responses={200: out.RolloutList},
    errors=(400, 404, 422),
)
async def list_rollouts(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    number = channels.parse_number(request.match_info["number"])
    items, cursor = await rollouts.list_rollouts(
        pool, number, limit=query.limit(request), cursor=request.query.get("cursor")
    )
    current = await rollouts.active_rollout(pool, number)
    return json_response(
        {
            "current": await current_json(pool, current) if current else None,
            "items": [r.public() for r in items],
            "next_cursor": cursor,
        }
    )


def _action(action: rollouts.Action, summary: str) -> Any:
    @endpoint(
        summary,
        role="publisher",
        path=out.RolloutPath,
        responses={200: out.Rollout},
        errors=(404, 409, 422),
    )
    async def act(request: web.Request) -> web.Response:
        number = channels.parse_number(request.match_info["number"])
        done = await rollouts.act(
            request.app[POOL], number, _rollout_id(request), action, request[PRINCIPAL].name, _now()
        )
        _log(rollouts.Outcome(done, action))
        return json_response(done.public())

    return act


pause = _action("pause", "Pause a running rollout at its step")
resume = _action(
    "resume", "Resume a paused rollout: its step's routing again, and the hold starts over"
)
abort = _action("abort", "Abort a rollout: the channel goes back to its starting routing")
promote = _action("promote", "Promote a rollout's target to every call at once")


# --- the scheduler ----------------------------------------------------------------------------


async def schedule(app: web.Application) -> AsyncIterator[None]:
    """The rollout scheduler of this admin process (cleanup_ctx): one `rollouts.tick` every
    AGENTVER_ROLLOUT_TICK_S seconds with the real clock. Any number of admin processes may run
    one (the tick is safe to run concurrently)."""
    interval = app[SETTINGS].rollout_tick_s
    if interval <= 0:  # off, as the tests have it, to drive the clock themselves
        yield
        return
    task = asyncio.create_task(every(interval, lambda: _tick(app), "rollout_tick_failed"))
    yield
    await cancel_and_wait(task)


async def _tick(app: web.Application) -> None:
    """One pass: a failed one (Postgres away) is retried at the next, and as the state is all
    in Postgres, nothing is lost meanwhile."""
    pool, metrics = app[POOL], app[METRICS]
    for outcome in await rollouts.tick(pool, _now()):
        if outcome.kind:
            _log(outcome)
            _count(metrics, outcome)
    metrics.show_rollouts(await rollouts.latest_per_channel(pool))

"""Admin API handlers for call analyses, per-version and A/B analytics, and guardrails."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from admin import schemas as out
from admin.calls import call_json, visible_call
from admin.metrics import METRICS
from admin.views import visible_number
from httpkit import query
from httpkit.auth import scopes_of, visible_agent
from httpkit.endpoint import endpoint
from httpkit.json import json_response, read_json, read_object
from httpkit.keys import POOL, PRINCIPAL
from store import agents, analytics, calls_analysis, channels, guardrails, rollups, schemas
from store import timeseries as ts
from store.calls import CallRef


def _bounded(t: datetime | None, default: datetime) -> datetime:
    """A window bound, held within the years analytics covers (so rounding it to an hour or a
    day, or stepping back from it, cannot leave the calendar)."""
    return default if t is None else min(max(t, analytics.EARLIEST), analytics.LATEST)


def _window(request: web.Request) -> tuple[datetime, datetime]:
    since = _bounded(query.timestamp(request, "since"), analytics.EARLIEST)
    until = _bounded(query.timestamp(request, "until"), analytics.LATEST)
    if since >= until:
        raise query.bad_query("until", "until must be later than since")
    return since, until


def _rollup_fields(request: web.Request, since: datetime, until: datetime) -> dict[str, Any]:
    """What a report read from the rollups adds: the window it covered, widened to whole hours,
    and the bound on its duration percentiles."""
    start, end = rollups.hour_window(since, until)
    return {
        "window": {
            "since": start.isoformat() if "since" in request.query else None,
            "until": end.isoformat() if "until" in request.query else None,
            "rounded_to": "hour",
        },
        "percentile_error": {
            "relative": rollups.RELATIVE_ERROR,
            "absolute_below_1s": rollups.ZERO_BUCKET_ERROR_S,
            "up_to_s": round(rollups.MAX_EXACT_S),
        },
    }


# --- calls -----------------------------------------------------------------------------------


@endpoint(
    "Record the voice agent's results for a call",
    role=("runtime", "editor"),
    path=out.CallPath,
    body=schemas.Analysis,
    responses={200: out.Call},
    errors=(404, 409),
)
async def post_analysis(request: web.Request) -> web.Response:
    """Store the voice agent's results, then check the channel's guardrails with them."""
    if scopes_of(request) is not None:
        await visible_call(request)  # the 404 of an unknown call before anything is written
    body = await read_object(request)
    pool, metrics = request.app[POOL], request.app[METRICS]
    call = await calls_analysis.record_analysis(
        pool, CallRef.parse(request.match_info["call_id"]), body, request[PRINCIPAL].name
    )
    metrics.count_analysis(call)
    for trip in await guardrails.evaluate(pool, call.channel):
        metrics.count_trip(call.channel, trip)
    return json_response(call_json(call))


# --- analytics -------------------------------------------------------------------------------


@endpoint(
    "Outcomes per version of an agent, with confidence intervals and comparisons",
    role="viewer",
    query=out.VersionsReportQuery,
    responses={200: out.VersionsReport},
    errors=(400, 404),
)
async def versions(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    agent_id = visible_agent(request, query.required(request, "agent_id"))
    since, until = _window(request)
    channel = request.query.get("channel")
    baseline = query.version_number(request, "baseline")
    split_draft = bool(query.flag(request, "split_draft"))
    await agents.get_agent(pool, agent_id)  # 404 for an unknown agent, not an empty report
    groups = await analytics.version_outcomes(
        pool, agent_id, since, until, channel=channel, split_draft=split_draft
    )
    return json_response(
        {
            "agent_id": agent_id,
            "since": request.query.get("since"),
            "until": request.query.get("until"),
            "channel": channel,
            "baseline": baseline,
            "split_draft": split_draft,
            **_rollup_fields(request, since, until),
            "items": analytics.version_report(groups, baseline),
        }
    )


@endpoint(
    "Outcomes per variant of a channel's A/B test",
    role="viewer",
    query=out.AbReportQuery,
    responses={200: out.AbReport},
    errors=(400, 422),
)
async def ab(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    number = await visible_number(
        request, channels.parse_number(query.required(request, "channel")), must_exist=True
    )
    since, until = _window(request)
    baseline = request.query.get("baseline")
    # A deleted channel's history stays readable; it just has no current weights.
    routing = await channels.find_channel(pool, number)
    current = routing.variants if routing else ()
    # Widened like the per-version report, so that both read whole hours of rollups.
    groups = await analytics.variant_outcomes(pool, number, *rollups.hour_window(since, until))
    return json_response(
        {
            "channel": number,
            "since": request.query.get("since"),
            "until": request.query.get("until"),
            "baseline": baseline,
            **_rollup_fields(request, since, until),
            "items": analytics.variant_report(groups, current, baseline),
        }
    )


@endpoint(
    "One metric of an agent's calls per hour or day, a series per version",
    role="viewer",
    query=out.TimeseriesQuery,
    responses={200: out.Timeseries},
    errors=(400, 404),
)
async def timeseries(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    agent_id = query.required(request, "agent_id")
    metric = query.choice(request, "metric", ts.METRICS, None)
    interval = query.choice(request, "interval", ts.INTERVALS, "day")
    until = _bounded(query.timestamp(request, "until"), datetime.now(UTC))
    raw_since = query.timestamp(request, "since")
    since = None if raw_since is None else _bounded(raw_since, analytics.EARLIEST)
    if since is not None and since >= until:
        raise query.bad_query("until", "until must be later than since")
    start, end = ts.window(since, until, interval)
    if ts.points_in(start, end, interval) > ts.MAX_POINTS:
        raise query.bad_query(
            "since",
            f"at most {ts.MAX_POINTS} points per series: narrow the window or widen the interval",
        )
    await agents.get_agent(pool, agent_id)  # 404 for an unknown agent, not empty series
    found = await ts.series(pool, agent_id, metric, interval, start, end)
    return json_response(
        {
            "agent_id": agent_id,
            "metric": metric,
            "interval": interval,
            "since": start.isoformat(),
            "until": end.isoformat(),
            "series": [s.public() for s in found],
        }
    )


# --- guardrails ------------------------------------------------------------------------------


@endpoint(
    "Read a channel's A/B guardrails",
    role="viewer",
    path=out.ChannelPath,
    responses={200: out.Guardrails},
    errors=(404, 422),
)
async def get_guardrails(request: web.Request) -> web.Response:
    number = await visible_number(request, channels.parse_number(request.match_info["number"]))
    found = await guardrails.get_guardrails(request.app[POOL], number)
    return json_response(found.public())


@endpoint(
    "Set a channel's A/B guardrails",
    role="publisher",
    path=out.ChannelPath,
    body=schemas.SetGuardrails,
    responses={200: out.Guardrails},
    errors=(404,),
)
async def put_guardrails(request: web.Request) -> web.Response:
    number = await visible_number(request, channels.parse_number(request.match_info["number"]))
    rules = schemas.parse_guardrails(await read_json(request))
    saved = await guardrails.set_guardrails(
        request.app[POOL], number, rules, request[PRINCIPAL].name
    )
    return json_response(saved.public())

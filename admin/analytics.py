"""Admin API handlers for call analyses, per-version and A/B analytics, and guardrails."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from admin.calls import call_json
from admin.metrics import METRICS
from httpkit import query
from httpkit.auth import requires
from httpkit.json import json_response, read_json, read_object
from httpkit.keys import POOL, PRINCIPAL
from store import agents, analytics, calls_analysis, channels, guardrails


def _window(request: web.Request) -> tuple[datetime, datetime]:
    since = query.timestamp(request, "since") or analytics.EARLIEST
    until = query.timestamp(request, "until") or analytics.LATEST
    if since >= until:
        raise query.bad_query("until", "until must be later than since")
    return since, until


# --- calls -----------------------------------------------------------------------------------


@requires("runtime", "editor")
async def post_analysis(request: web.Request) -> web.Response:
    """Store the voice agent's results, then check the channel's guardrails with them."""
    body = await read_object(request)
    pool, metrics = request.app[POOL], request.app[METRICS]
    call = await calls_analysis.record_analysis(
        pool, request.match_info["call_id"], body, request[PRINCIPAL].name
    )
    metrics.count_analysis(call)
    for trip in await guardrails.evaluate(pool, call.channel):
        metrics.count_trip(call.channel, trip)
    return json_response(call_json(call))


# --- analytics -------------------------------------------------------------------------------


@requires("viewer")
async def versions(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    agent_id = query.required(request, "agent_id")
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
            "items": analytics.version_report(groups, baseline),
        }
    )


@requires("viewer")
async def ab(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    number = channels.parse_number(query.required(request, "channel"))
    since, until = _window(request)
    baseline = request.query.get("baseline")
    # A deleted channel's history stays readable; it just has no current weights.
    routing = await channels.find_channel(pool, number)
    current = routing.variants if routing else ()
    groups = await analytics.variant_outcomes(pool, number, since, until)
    return json_response(
        {
            "channel": number,
            "since": request.query.get("since"),
            "until": request.query.get("until"),
            "baseline": baseline,
            "items": analytics.variant_report(groups, current, baseline),
        }
    )


# --- guardrails ------------------------------------------------------------------------------


@requires("viewer")
async def get_guardrails(request: web.Request) -> web.Response:
    number = channels.parse_number(request.match_info["number"])
    found = await guardrails.get_guardrails(request.app[POOL], number)
    return json_response(found.public())


@requires("publisher")
async def put_guardrails(request: web.Request) -> web.Response:
    number = channels.parse_number(request.match_info["number"])
    rules = guardrails.parse_guardrails(await read_json(request))
    saved = await guardrails.set_guardrails(
        request.app[POOL], number, rules, request[PRINCIPAL].name
    )
    return json_response(saved.public())

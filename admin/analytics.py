"""Admin API handlers for call analyses, per-version and A/B analytics, and guardrails."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from admin.metrics import METRICS
from httpkit.auth import requires
from httpkit.errors import ApiError
from httpkit.json import json_response, read_json, read_object
from httpkit.keys import POOL, PRINCIPAL
from store import agents, analytics, calls_analysis, channels, guardrails

_TRUE, _FALSE = ("true", "1"), ("false", "0")


def _bad_query(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid_query", message, [{"path": name, "message": message}])


def _required(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if not value:
        raise _bad_query(name, f"{name} is required")
    return value


def _timestamp(request: web.Request, name: str) -> datetime | None:
    """An ISO 8601 query timestamp (`Z` or an offset; none means UTC)."""
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise _bad_query(name, f"{name} must be an ISO 8601 timestamp (encode + as %2B)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _window(request: web.Request) -> tuple[datetime, datetime]:
    since = _timestamp(request, "since") or analytics.EARLIEST
    until = _timestamp(request, "until") or analytics.LATEST
    if since >= until:
        raise _bad_query("until", "until must be later than since")
    return since, until


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in _TRUE + _FALSE:
        raise _bad_query(name, f"{name} must be true or false")
    return raw in _TRUE


def _baseline_version(request: web.Request) -> int | None:
    raw = request.query.get("baseline")
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 9 or int(raw) < 1:
        raise _bad_query("baseline", "baseline must be a version number")
    return int(raw)


# --- calls -----------------------------------------------------------------------------------


@requires("runtime", "viewer")
async def get_call(request: web.Request) -> web.Response:
    call = await calls_analysis.get_call(request.app[POOL], request.match_info["call_id"])
    return json_response(call.public())


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
    return json_response(call.public())


# --- analytics -------------------------------------------------------------------------------


@requires("viewer")
async def versions(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    agent_id = _required(request, "agent_id")
    since, until = _window(request)
    channel = request.query.get("channel")
    baseline, split_draft = _baseline_version(request), _flag(request, "split_draft")
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
    number = channels.parse_number(_required(request, "channel"))
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

"""The call list: every call tagged with what it was served, filterable by version."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from admin import schemas as out
from httpkit import query
from httpkit.auth import call_in_scope, scopes_of
from httpkit.endpoint import endpoint
from httpkit.json import json_response
from httpkit.keys import POOL
from store import calls
from store.snapshots import DRAFT


def call_json(call: calls.CallRecord) -> dict[str, Any]:
    """One call with its analysis (null until the voice agent posts one)."""
    return {**call.public(), "analysis": call.analysis_json()}


def _filter(request: web.Request) -> calls.CallFilter:
    raw_version = request.query.get("version")
    version = None
    if raw_version is not None and raw_version != DRAFT:
        version = query.decimal(raw_version)
        if version is None:
            raise query.bad_query("version", "version must be a version number or 'draft'")
    return calls.CallFilter(
        agent_id=request.query.get("agent_id") or None,
        draft=raw_version == DRAFT,
        version=version,
        variant=request.query.get("variant") or None,
        channel=request.query.get("channel") or None,
        since=query.timestamp(request, "since"),
        until=query.timestamp(request, "until"),
        status=request.query.get("status") or None,
        sentiment=request.query.get("sentiment") or None,
        automated=query.flag(request, "automated"),
        provider=_provider(request),
        provider_call_id=request.query.get("provider_call_id") or None,
        agents=scopes_of(request),
    )


def _provider(request: web.Request) -> str | None:
    provider = request.query.get("provider") or None
    if provider is not None and provider not in calls.PROVIDERS:
        raise query.bad_query("provider", "provider must be one of " + ", ".join(calls.PROVIDERS))
    if provider is None and request.query.get("provider_call_id"):
        raise query.bad_query("provider", "provider_call_id needs the provider it belongs to")
    return provider


@endpoint(
    "List calls, newest first, filtered",
    role="viewer",
    query=out.CallsQuery,
    responses={200: out.CallList},
    errors=(400,),
)
async def list_calls(request: web.Request) -> web.Response:
    pool, where = request.app[POOL], _filter(request)
    want_total = query.flag(request, "count")
    items, cursor = await calls.list_calls(
        pool, where, limit=query.limit(request), cursor=request.query.get("cursor")
    )
    body: dict[str, Any] = {"items": [c.public() for c in items], "next_cursor": cursor}
    if want_total:
        body["total"], body["total_exact"] = await calls.count_calls(pool, where)
    return json_response(body)


@endpoint(
    "Read one call",
    role=("runtime", "viewer"),
    path=out.CallPath,
    responses={200: out.Call},
    errors=(404,),
)
async def get_call(request: web.Request) -> web.Response:
    call = await visible_call(request)
    return json_response(call_json(call))


async def visible_call(request: web.Request) -> calls.CallRecord:
    """The call the path names, if the request's token may see it; else the 404 of an unknown
    call."""
    call = await calls.find_call(
        request.app[POOL], calls.CallRef.parse(request.match_info["call_id"])
    )
    call_in_scope(request, call.call_id, call.agent_id)
    return call

"""The call list: every call tagged with what it was served, filterable by version."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from httpkit import query
from httpkit.auth import requires
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
    )


@requires("viewer")
async def list_calls(request: web.Request) -> web.Response:
    """GET /v1/calls?agent_id=&version=&variant=&channel=&status=&sentiment=&automated=
    &since=&until=, newest first."""
    items, cursor = await calls.list_calls(
        request.app[POOL],
        _filter(request),
        limit=query.limit(request),
        cursor=request.query.get("cursor"),
    )
    return json_response({"items": [c.public() for c in items], "next_cursor": cursor})


@requires("runtime", "viewer")
async def get_call(request: web.Request) -> web.Response:
    call = await calls.get_call(request.app[POOL], request.match_info["call_id"])
    return json_response(call_json(call))

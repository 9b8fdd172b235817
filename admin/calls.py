"""The call list: every call tagged with what it was served, filterable by version."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from admin import schemas as out
from httpkit import query
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
    )


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
    call = await calls.get_call(request.app[POOL], request.match_info["call_id"])
    return json_response(call_json(call))

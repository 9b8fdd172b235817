"""The call list: every call tagged with what it was served, filterable by version."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from admin.analytics import _bad_query, _timestamp
from admin.views import _decimal, _limit
from httpkit.auth import requires
from httpkit.json import json_response
from httpkit.keys import POOL
from store import calls


def call_json(call: calls.CallRecord) -> dict[str, Any]:
    """A call as the API shows it (DESIGN.md section 3); `version` null means the draft."""
    return {
        "call_id": call.call_id,
        "provider": call.provider,
        "provider_call_id": call.provider_call_id,
        "channel": call.channel,
        "from": call.from_number,
        "agent_id": call.agent_id,
        "version": call.version,
        "draft_revision": call.draft_revision,
        "config_hash": call.config_hash,
        "variant": call.variant,
        "status": call.status,
        "started_at": call.started_at,
        "ended_at": call.ended_at,
        "duration_s": call.duration_s,
        "sentiment": call.sentiment,
        "automated": call.automated,
    }


def _filter(request: web.Request) -> calls.CallFilter:
    raw_version = request.query.get("version")
    version = None
    if raw_version is not None and raw_version != "draft":
        version = _decimal(raw_version)
        if version is None:
            raise _bad_query("version", "version must be a version number or 'draft'")
    return calls.CallFilter(
        agent_id=request.query.get("agent_id") or None,
        draft=raw_version == "draft",
        version=version,
        variant=request.query.get("variant") or None,
        channel=request.query.get("channel") or None,
        since=_timestamp(request, "since"),
        until=_timestamp(request, "until"),
    )


@requires("viewer")
async def list_calls(request: web.Request) -> web.Response:
    """GET /v1/calls?agent_id=&version=&variant=&channel=&since=&until=, newest first."""
    items, cursor = await calls.list_calls(
        request.app[POOL],
        _filter(request),
        limit=_limit(request),
        cursor=request.query.get("cursor"),
    )
    return json_response({"items": [call_json(c) for c in items], "next_cursor": cursor})

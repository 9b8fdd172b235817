"""The call list: every call tagged with what it was served, filterable by version."""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable
from typing import Any, get_args

import structlog
from aiohttp import web

from admin import schemas as out
from httpkit import query
from httpkit.auth import call_in_scope, scopes_of
from httpkit.endpoint import Raw, endpoint
from httpkit.json import dumps, json_response
from httpkit.keys import POOL, PRINCIPAL
from store import calls
from store.snapshots import DRAFT

log = structlog.get_logger()

CSV, NDJSON = "text/csv", "application/x-ndjson"
EXPORT_MEDIA_TYPES = dict(zip(get_args(out.ExportFormat), (CSV, NDJSON), strict=True))
# The export's columns: the call resource's fields in its order (CallRecord.public), without
# the analysis, whose fields differ from one configuration to the next.
EXPORT_COLUMNS = [
    f.alias or name for name, f in out.Call.model_fields.items() if name != "analysis"
]
# Characters gathered before a write: few writes, and little held while the client reads.
EXPORT_CHUNK_CHARS = 64 * 1024


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
    call_in_scope(request[PRINCIPAL], call.call_id, call.agent_id)
    return call


def _export_format(request: web.Request) -> str:
    """`format`, else NDJSON when Accept names it, else CSV."""
    chosen = request.query.get("format")
    if chosen is None:
        return "ndjson" if NDJSON in request.headers.get("Accept", "") else "csv"
    if chosen not in EXPORT_MEDIA_TYPES:
        raise query.bad_query("format", "format must be csv or ndjson")
    return chosen


def _csv_value(value: Any) -> Any:
    """As in the JSON resource: true/false, ISO 8601 times; null is an empty field."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value.isoformat() if hasattr(value, "isoformat") else value


def _csv_line(values: list[Any]) -> str:
    line = io.StringIO()
    csv.writer(line).writerow([_csv_value(v) for v in values])
    return line.getvalue()


def _encoder(chosen: str) -> Callable[[calls.CallRecord], str]:
    if chosen == "ndjson":
        return lambda call: dumps(call.public()) + "\n"
    return lambda call: _csv_line(list(call.public().values()))


@endpoint(
    "Export calls, oldest first, filtered as the list is, streamed as CSV or NDJSON",
    role="viewer",
    query=out.CallsExportQuery,
    responses={
        200: (
            Raw(CSV, "a header row of the call's fields, then one row per call (RFC 4180)"),
            Raw(NDJSON, "one Call object per line"),
        )
    },
    response_headers={"Content-Disposition": "attachment, with a file name"},
    errors=(400,),
)
async def export_calls(request: web.Request) -> web.StreamResponse:
    """Streamed from a server-side cursor, a chunk at a time: memory stays flat whatever the
    number of calls. A failure after the first byte breaks the connection (httpkit/errors.py),
    so an export cut short never looks complete."""
    where, chosen = _filter(request), _export_format(request)
    encode = _encoder(chosen)
    records = calls.export_calls(request.app[POOL], where)
    async with contextlib.aclosing(records):
        # The first row before the headers: a query that fails gets a JSON error.
        first = await anext(records, None)
        response = web.StreamResponse(
            headers={"Content-Disposition": f'attachment; filename="calls.{chosen}"'}
        )
        response.content_type = EXPORT_MEDIA_TYPES[chosen]
        response.charset = "utf-8"
        await response.prepare(request)
        chunk = [_csv_line(EXPORT_COLUMNS)] if chosen == "csv" else []
        size, exported, call = sum(map(len, chunk)), 0, first
        while call is not None:
            line = encode(call)
            chunk.append(line)
            size += len(line)
            exported += 1
            if size >= EXPORT_CHUNK_CHARS:
                await response.write("".join(chunk).encode())
                chunk, size = [], 0
            call = await anext(records, None)
        await response.write("".join(chunk).encode())
    await response.write_eof()
    log.info("calls_exported", format=chosen, calls=exported)
    return response

"""Runtime lookups for voice agents, and the operational endpoints."""

from __future__ import annotations

import asyncio
import re
from json.encoder import encode_basestring

from aiohttp import web

from httpkit import health
from httpkit.auth import authorize, call_in_scope, scopes_of, visible_routing
from httpkit.endpoint import endpoint
from httpkit.errors import ApiError
from httpkit.fastlane import LaneAnswer, LaneRequest, lane_view
from httpkit.json import dumps, json_response
from httpkit.keys import GUARD, POOL
from router import schemas as out
from router.keys import CONFIGS, REDIS, RESOLVER, WRITER
from store import agents, calls, codecs, db, rollouts, schemas
from store.config import AgentConfig
from store.errors import ConfigNotFound
from store.snapshots import Snapshot

CONFIG_HASH = re.compile(r"^[0-9a-f]{64}$")
# A config blob never changes: any cache may keep it for good.
IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"
JSON_UTF8 = "application/json; charset=utf-8"


async def _config_json(app: web.Application, digest: str) -> bytes:
    """A config blob as JSON bytes: encoded once per blob (immutable), not once per request."""
    pool, guard = app[POOL], app[GUARD]

    async def load() -> bytes:
        return dumps(await guard.read(pool, lambda conn: agents.get_config(conn, digest))).encode()

    return await app[CONFIGS].get(codecs.CONFIG_JSON, digest, load)


def _json_bytes(body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer already encoded (the same bytes and type json_response would send)."""
    return web.Response(body=body, headers={"Content-Type": JSON_UTF8, **(headers or {})})


async def _served(app: web.Application, call_id: str) -> Snapshot:
    """What `call_id` was served: remembered when this worker recorded it, else from Postgres."""
    served = app[WRITER].served.get(call_id)
    if served is not None:
        return served
    call = await app[GUARD].read(app[POOL], lambda conn: calls.get_call(conn, call_id))
    return Snapshot(call.agent_id, call.version, call.draft_revision, call.config_hash)


# Who may look a call's config up: the voice agent (runtime), or anyone who may read.
CALL_CONFIG_ROLES = ("runtime", "viewer")


async def call_config_lane(app: web.Application, request: LaneRequest) -> LaneAnswer:
    """The exact configuration a call was served, whatever happened to the draft or routing.
    Asked by the voice agent as each call starts: served by the fast lane (httpkit/fastlane.py).
    """
    principal = await authorize(app, request.headers, CALL_CONFIG_ROLES)
    call_id = request.params["call_id"]
    call = await _served(app, call_id)
    call_in_scope(principal, call_id, call.agent_id)
    # What dumps of the whole would write, the encoded config spliced in as the last member;
    # the scalars written directly, a fifth of the encoder's time per lookup.
    head = (
        f'{{"call_id": {encode_basestring(call_id)}, '
        f'"agent_id": {encode_basestring(call.agent_id)}, '
        f'"version": {_json_int(call.version)}, '
        f'"draft_revision": {_json_int(call.draft_revision)}, '
        f'"config_hash": {encode_basestring(call.config_hash)}, "config": '
    )
    config = await _config_json(app, call.config_hash)
    return LaneAnswer(200, JSON_UTF8, b"".join((head.encode(), config, b"}")))


call_config = endpoint(
    "The exact configuration a call was served",
    role=CALL_CONFIG_ROLES,
    checks_role_itself=True,
    path=out.CallPath,
    responses={200: out.CallConfig},
    errors=(404, 503),
)(lane_view(call_config_lane))


def _json_int(value: int | None) -> str:
    """An integer or None as dumps writes it."""
    return "null" if value is None else str(value)


def _etag_matches(header: str | None, etag: str) -> bool:
    if header is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


@endpoint(
    "An immutable config blob by hash, cacheable forever",
    role=("runtime", "viewer"),
    path=out.ConfigPath,
    headers=out.IfNoneMatch,
    responses={200: AgentConfig, 304: None},
    response_headers={"ETag": "the config hash, quoted", "Cache-Control": "immutable"},
    errors=(404, 503),
)
async def config_blob(request: web.Request) -> web.Response:
    """An immutable config blob by hash, cacheable forever; If-None-Match → 304."""
    digest = request.match_info["config_hash"]
    if not CONFIG_HASH.match(digest):
        raise ConfigNotFound(f"no config with hash {digest}")
    scopes = scopes_of(request)
    if scopes is not None and not await request.app[GUARD].read(
        request.app[POOL], lambda conn: agents.config_used_by(conn, digest, scopes)
    ):
        raise ConfigNotFound(f"no config with hash {digest}")
    headers = {"ETag": f'"{digest}"', "Cache-Control": IMMUTABLE_CACHE_CONTROL}
    if _etag_matches(request.headers.get("If-None-Match"), headers["ETag"]):
        return web.Response(status=304, headers=headers)
    return _json_bytes(await _config_json(request.app, digest), headers)


@endpoint(
    "Dry run: which variant and version a call would get now, and by which rule",
    role=("runtime", "viewer"),
    query=schemas.ResolveQuery,
    responses={200: schemas.Resolution},
    errors=(400,),
)
async def resolve(request: web.Request) -> web.Response:
    """Dry run: which variant and version a call would get now, and by which rule."""
    to = request.query.get("to")
    if not to:
        raise ApiError(400, "invalid_query", "to is required", {"path": "to"})
    explanation = await request.app[RESOLVER].explain(
        to,
        request.query.get("from", ""),
        request.query.get("call_id"),
        lambda routing: visible_routing(request, routing),
    )
    pool, guard = request.app[POOL], request.app[GUARD]

    async def active(number: str) -> rollouts.Rollout | None:
        try:
            return await guard.read(pool, lambda conn: rollouts.active_rollout(conn, number))
        except db.DatabaseUnavailable:
            # The dry run answers from this worker's cache as calls are; only the rollout that
            # split the channel goes unnamed while Postgres cannot tell.
            return None

    return json_response(await rollouts.name_in_dry_run(explanation, active))


@endpoint(
    "Readiness: Postgres and Redis both answer",
    responses={200: health.Readiness, 503: health.Readiness},
)
async def readyz(request: web.Request) -> web.Response:
    """200 when Postgres and Redis both answer; 503 naming the degraded ones otherwise."""
    app = request.app
    return await health.readiness(
        {
            "postgres": db.ping(app[POOL], health.READY_TIMEOUT_S),
            "redis": asyncio.wait_for(app[REDIS].ping(), health.READY_TIMEOUT_S),
        }
    )

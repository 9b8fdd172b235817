"""Admin API handlers: parse the request, call the store, shape the JSON. No SQL here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import asyncpg
from aiohttp import web

from admin import schemas as out
from httpkit import query
from httpkit.auth import scopes_of, sees, unscoped, visible_agent, visible_routing
from httpkit.endpoint import endpoint
from httpkit.errors import ApiError
from httpkit.json import json_response, read_object
from httpkit.keys import POOL, PRINCIPAL
from store import (
    agents,
    audit,
    call_routing,
    calls,
    channels,
    rollouts,
    schemas,
    snapshots,
    tokens,
)
from store.diff import diff_configs, merge_patch
from store.errors import ChannelNotFound, InvalidConfig
from store.validation import InvalidRequest, parse

DRAFT_ETAG = {"ETag": "the draft revision, quoted; send it back in If-Match"}
ARCHIVED: dict[str, bool | None] = {"false": False, "true": True, "all": None}
CHANNEL_ETAG = {"ETag": "the routing revision, quoted; send it back in If-Match"}


# --- request parsing -------------------------------------------------------------------------


def _agent_id(request: web.Request) -> str:
    return visible_agent(request, request.match_info["agent_id"])


def _version_param(request: web.Request) -> int:
    number = query.decimal(request.match_info["n"])
    if number is None:
        raise ApiError(404, "version_not_found", "a version is named by its number")
    return number


def _if_match(request: web.Request) -> int | None:
    """The revision (draft or channel) an If-Match names; None when absent or `*`."""
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    revision = query.decimal(raw.strip().removeprefix("W/").strip('"'))
    if revision is None:
        # An ETag we never issued cannot match the current revision.
        raise ApiError(412, "revision_conflict", "If-Match names no revision")
    return revision


# --- shaping ---------------------------------------------------------------------------------


def draft_json(draft: agents.Draft) -> dict[str, Any]:
    return {
        "revision": draft.revision,
        "config": draft.config,
        "config_hash": draft.config_hash,
        "updated_at": draft.updated_at,
        "updated_by": draft.updated_by,
    }


def agent_json(agent: agents.Agent) -> dict[str, Any]:
    return {
        "id": agent.id,
        "name": agent.name,
        "created_at": agent.created_at,
        "draft": draft_json(agent.draft),
        "latest_version": agent.latest_version,
        "archived_at": agent.archived_at,
    }


def version_json(version: agents.Version) -> dict[str, Any]:
    data = asdict(version)
    if version.config is None:
        del data["config"]
    return data


def _draft_response(draft: agents.Draft, status: int = 200) -> web.Response:
    return json_response(draft_json(draft), status=status, headers={"ETag": f'"{draft.revision}"'})


def _listing(items: list[Any], next_cursor: str | None, **extra: Any) -> web.Response:
    return json_response({**extra, "items": items, "next_cursor": next_cursor})


# --- agents and drafts -----------------------------------------------------------------------


@endpoint(
    "Create an agent with its initial draft",
    role="editor",
    body=schemas.CreateAgent,
    responses={201: out.Agent},
    response_headers={"Location": "the agent's URL"},
)
async def create_agent(request: web.Request) -> web.Response:
    # Its id cannot be among the token's scopes yet: the token could not even read it back.
    unscoped(request, "create agents")
    body = parse(
        schemas.CreateAgent, await read_object(request), InvalidConfig, "the agent is invalid"
    )
    config = body.config
    # A config that is not an object is left for validation to name as such.
    if "name" in body.model_fields_set and isinstance(config, dict):
        config = {**config, "name": body.name}
    agent = await agents.create_agent(request.app[POOL], config, request[PRINCIPAL].name)
    return json_response(
        agent_json(agent), status=201, headers={"Location": f"/v1/agents/{agent.id}"}
    )


def _archived(request: web.Request) -> bool | None:
    """`archived`: false (the default) lists live agents, true archived ones, all both."""
    raw = request.query.get("archived", "false")
    if raw not in ARCHIVED:
        raise query.bad_query("archived", "archived must be false, true or all")
    return ARCHIVED[raw]


@endpoint(
    "List agents, newest first (live ones unless `archived` says otherwise)",
    role="viewer",
    query=out.AgentsQuery,
    responses={200: out.AgentList},
    errors=(400,),
)
async def list_agents(request: web.Request) -> web.Response:
    items, cursor = await agents.list_agents(
        request.app[POOL],
        limit=query.limit(request),
        cursor=request.query.get("cursor"),
        archived=_archived(request),
        agents=scopes_of(request),
    )
    return _listing([agent_json(a) for a in items], cursor)


@endpoint(
    "Read an agent",
    role="viewer",
    path=out.AgentPath,
    responses={200: out.Agent},
    errors=(404,),
)
async def get_agent(request: web.Request) -> web.Response:
    agent = await agents.get_agent(request.app[POOL], _agent_id(request))
    return json_response(agent_json(agent))


@endpoint(
    "Archive an agent: unlisted and refused as a channel's target; versions and calls stay. "
    "409 naming the channels while any routes to it",
    role="publisher",
    path=out.AgentPath,
    responses={200: out.Agent},
    errors=(404, 409),
)
async def archive_agent(request: web.Request) -> web.Response:
    return await _archival(request, agents.archive)


@endpoint(
    "Unarchive an agent: listed again, and channels may route to it",
    role="publisher",
    path=out.AgentPath,
    responses={200: out.Agent},
    errors=(404,),
)
async def unarchive_agent(request: web.Request) -> web.Response:
    return await _archival(request, agents.unarchive)


async def _archival(
    request: web.Request, change: Callable[[asyncpg.Pool, str, str], Awaitable[agents.Agent]]
) -> web.Response:
    agent = await change(request.app[POOL], request.match_info["agent_id"], request[PRINCIPAL].name)
    return json_response(agent_json(agent))


@endpoint(
    "Read the draft",
    role="viewer",
    path=out.AgentPath,
    responses={200: out.Draft},
    response_headers=DRAFT_ETAG,
    errors=(404,),
)
async def get_draft(request: web.Request) -> web.Response:
    agent = await agents.get_agent(request.app[POOL], _agent_id(request))
    return _draft_response(agent.draft)


@endpoint(
    "Replace the draft's configuration (revision + 1)",
    role="editor",
    path=out.AgentPath,
    headers=out.IfMatch,
    body=schemas.PutDraft,
    responses={200: out.Draft},
    response_headers=DRAFT_ETAG,
    errors=(404, 412),
)
async def put_draft(request: web.Request) -> web.Response:
    body = parse(
        schemas.PutDraft, await read_object(request), InvalidConfig, "the draft is invalid"
    )
    draft = await agents.update_draft(
        request.app[POOL],
        _agent_id(request),
        lambda _current: body.config,
        request[PRINCIPAL].name,
        if_match=_if_match(request),
    )
    return _draft_response(draft)


@endpoint(
    "Edit the draft with a JSON merge patch (RFC 7396) of the draft resource",
    role="editor",
    path=out.AgentPath,
    headers=out.IfMatch,
    body=schemas.PatchDraft,
    media_types=("application/json", "application/merge-patch+json"),
    responses={200: out.Draft},
    response_headers=DRAFT_ETAG,
    errors=(404, 412),
)
async def patch_draft(request: web.Request) -> web.Response:
    patch = parse(
        schemas.PatchDraft,
        await read_object(request),
        InvalidRequest,
        "a draft merge patch may only change config, with an object",
    )
    draft = await agents.update_draft(
        request.app[POOL],
        _agent_id(request),
        lambda current: merge_patch(current, patch.config),
        request[PRINCIPAL].name,
        if_match=_if_match(request),
    )
    return _draft_response(draft)


# --- versions --------------------------------------------------------------------------------


@endpoint(
    "Publish the draft as the next version (the draft is unchanged)",
    role="publisher",
    path=out.AgentPath,
    headers=out.IfMatch,
    body=schemas.Publish,
    responses={201: out.Version},
    response_headers={"Location": "the version's URL"},
    errors=(404, 409, 412),
)
async def publish(request: web.Request) -> web.Response:
    body = parse(
        schemas.Publish, await read_object(request), InvalidRequest, "the version is invalid"
    )
    version = await agents.publish(
        request.app[POOL],
        _agent_id(request),
        body.name,
        body.description or "",
        request[PRINCIPAL].name,
        if_revision=_if_match(request),
        allow_unchanged=body.allow_unchanged,
    )
    location = f"/v1/agents/{version.agent_id}/versions/{version.version}"
    return json_response(version_json(version), status=201, headers={"Location": location})


@endpoint(
    "History: the draft's summary, then versions newest first",
    role="viewer",
    path=out.AgentPath,
    query=out.PageQuery,
    responses={200: out.History},
    errors=(400, 404),
)
async def list_versions(request: web.Request) -> web.Response:
    history = await agents.history(
        request.app[POOL],
        _agent_id(request),
        limit=query.limit(request),
        cursor=request.query.get("cursor"),
    )
    summary = {k: v for k, v in draft_json(history.draft).items() if k != "config"}
    return _listing([version_json(v) for v in history.versions], history.next_cursor, draft=summary)


@endpoint(
    "Read one version's full snapshot",
    role="viewer",
    path=out.VersionPath,
    responses={200: out.Version},
    response_headers={"ETag": "the config hash, quoted"},
    errors=(404,),
)
async def get_version(request: web.Request) -> web.Response:
    version = await agents.get_version(
        request.app[POOL], _agent_id(request), _version_param(request)
    )
    return json_response(version_json(version), headers={"ETag": f'"{version.config_hash}"'})


@endpoint(
    "Diff version n against another version or the draft",
    role="viewer",
    path=out.VersionPath,
    query=out.DiffQuery,
    responses={200: out.Diff},
    errors=(400, 404),
)
async def diff_version(request: web.Request) -> web.Response:
    pool, agent_id = request.app[POOL], _agent_id(request)
    base = await agents.get_version(pool, agent_id, _version_param(request))
    against = request.query.get("against", "draft")
    if against == "draft":
        draft = (await agents.get_agent(pool, agent_id)).draft
        other, target = draft.config, {"draft": True, "revision": draft.revision}
    elif (number := query.decimal(against)) is not None:
        version = await agents.get_version(pool, agent_id, number)
        other, target = version.config or {}, {"version": version.version}
    else:
        raise ApiError(
            400, "invalid_query", "against must be a version number or 'draft'", {"path": "against"}
        )
    return json_response(
        {
            "agent_id": agent_id,
            "from": {"version": base.version},
            "to": target,
            **diff_configs(base.config or {}, other),
        }
    )


@endpoint(
    "Overwrite the draft with version n (revision + 1); no version is made",
    role="publisher",
    path=out.VersionPath,
    responses={200: out.Draft},
    response_headers=DRAFT_ETAG,
    errors=(404,),
)
async def restore(request: web.Request) -> web.Response:
    draft = await agents.restore(
        request.app[POOL],
        _agent_id(request),
        _version_param(request),
        request[PRINCIPAL].name,
    )
    return _draft_response(draft)


# --- channels --------------------------------------------------------------------------------


async def visible_number(request: web.Request, number: str, *, must_exist: bool = False) -> str:
    """`number`, unless it routes to an agent outside the token's scopes (or, with `must_exist`,
    is no channel at all, for a token limited to some agents): then the 404 of an unknown
    channel."""
    if scopes_of(request) is None:
        return number
    routing = await channels.find_channel(request.app[POOL], number)
    if (routing is not None or must_exist) and visible_routing(request, routing) is None:
        raise ChannelNotFound(f"no channel {number}")
    return number


async def _number(request: web.Request) -> str:
    return await visible_number(request, channels.parse_number(request.match_info["number"]))


@endpoint(
    "Set a number's routing: a pin or weighted A/B variants",
    role="publisher",
    path=out.ChannelPath,
    headers=out.IfMatch,
    body=schemas.Routing,
    responses={200: out.Channel},
    response_headers=CHANNEL_ETAG,
    errors=(412,),
)
async def put_channel(request: web.Request) -> web.Response:
    number = await _number(request)
    variants, sticky = schemas.parse_routing(await read_object(request))
    for i, v in enumerate(variants):
        if not sees(request, [v.agent_id]):
            raise channels.routing_error(f"variants[{i}].agent_id", f"no agent {v.agent_id}")
    routing = await channels.set_channel(
        request.app[POOL],
        number,
        variants,
        sticky,
        request[PRINCIPAL].name,
        if_revision=_if_match(request),
    )
    return json_response(routing.public(), headers={"ETag": f'"{routing.revision}"'})


@endpoint(
    "Read a number's routing",
    role="viewer",
    path=out.ChannelPath,
    responses={200: out.Channel},
    response_headers=CHANNEL_ETAG,
    errors=(404, 422),
)
async def get_channel(request: web.Request) -> web.Response:
    routing = await channels.get_channel(request.app[POOL], await _number(request))
    return json_response(routing.public(), headers={"ETag": f'"{routing.revision}"'})


@endpoint(
    "Remove a number's routing",
    role="publisher",
    path=out.ChannelPath,
    responses={204: None},
    errors=(404, 422),
)
async def delete_channel(request: web.Request) -> web.Response:
    await channels.delete_channel(
        request.app[POOL], await _number(request), request[PRINCIPAL].name
    )
    return web.Response(status=204)


@endpoint(
    "List channels by number",
    role="viewer",
    query=out.ChannelsQuery,
    responses={200: out.ChannelList},
    errors=(400,),
)
async def list_channels(request: web.Request) -> web.Response:
    items, cursor = await channels.list_channels(
        request.app[POOL],
        limit=query.limit(request),
        cursor=request.query.get("cursor"),
        agent_id=request.query.get("agent_id"),
        agents=scopes_of(request),
    )
    return _listing([r.public() for r in items], cursor)


# --- audit and tokens ------------------------------------------------------------------------


@endpoint(
    "The audit log, newest first",
    role="viewer",
    query=out.AuditQuery,
    responses={200: out.AuditList},
    errors=(400,),
)
async def list_audit(request: web.Request) -> web.Response:
    items, cursor = await audit.list_entries(
        request.app[POOL],
        limit=query.limit(request),
        cursor=request.query.get("cursor"),
        agent_id=request.query.get("agent_id"),
        channel=request.query.get("channel"),
        action=request.query.get("action"),
        agents=scopes_of(request),
    )
    return _listing([asdict(e) for e in items], cursor)


def token_json(token: tokens.Token) -> dict[str, Any]:
    return asdict(token)


@endpoint(
    "Create an API token, optionally expiring or limited to some agents; its secret is shown once",
    role="admin",
    body=schemas.CreateToken,
    responses={201: out.NewToken},
)
async def create_token(request: web.Request) -> web.Response:
    unscoped(request, "manage tokens")
    body = parse(
        schemas.CreateToken, await read_object(request), InvalidRequest, "the token is invalid"
    )
    secret, token = await tokens.issue_token(
        request.app[POOL],
        body.name,
        body.role,
        expires_in_s=body.expires_in,
        scopes=body.scopes,
        actor=request[PRINCIPAL].name,
    )
    return json_response({**token_json(token), "token": secret}, status=201)


@endpoint(
    "List API tokens, newest first, revoked and expired ones included; never their secrets",
    role="admin",
    query=out.PageQuery,
    responses={200: out.TokenList},
    errors=(400,),
)
async def list_tokens(request: web.Request) -> web.Response:
    unscoped(request, "manage tokens")
    items, cursor = await tokens.list_tokens(
        request.app[POOL], limit=query.limit(request), cursor=request.query.get("cursor")
    )
    return _listing([token_json(t) for t in items], cursor)


@endpoint(
    "Revoke a token for good: every worker refuses it within seconds",
    role="admin",
    path=out.TokenPath,
    responses={200: out.Token},
    errors=(404, 409),
)
async def revoke_token(request: web.Request) -> web.Response:
    unscoped(request, "manage tokens")
    token_id = query.decimal(request.match_info["token_id"])
    if token_id is None:
        raise tokens.TokenNotFound(f"no token {request.match_info['token_id']}")
    token = await tokens.revoke_token(request.app[POOL], token_id, request[PRINCIPAL].name)
    return json_response(token_json(token))


# --- the signed-in principal (the web console asks what its token may do) ---------------------


@endpoint(
    "The calling token's principal", role=("viewer", "runtime"), responses={200: out.Principal}
)
async def whoami(request: web.Request) -> web.Response:
    """Any valid token: its principal's name and role."""
    principal = request[PRINCIPAL]
    return json_response(
        {"name": principal.name, "role": principal.role, "scopes": scopes_of(request)}
    )


async def _visible_routing(request: web.Request, number: str) -> channels.Routing | None:
    return visible_routing(request, await channels.find_channel(request.app[POOL], number))


@endpoint(
    "Dry run: which variant and version a call would get now, and why; records nothing",
    role="viewer",
    query=schemas.ResolveQuery,
    responses={200: schemas.Resolution},
    errors=(400,),
)
async def resolve(request: web.Request) -> web.Response:
    """Dry run straight from Postgres: which variant and version a call would get, and why."""
    pool = request.app[POOL]
    explanation = await call_routing.explain(
        query.required(request, "to"),
        request.query.get("from", ""),
        request.query.get("call_id"),
        routing_of=lambda number: _visible_routing(request, number),
        snapshot_of=lambda variant: snapshots.load_variant(pool, variant),
        assignment_of=lambda number, key: calls.find_assignment(pool, number, key),
    )
    return json_response(
        await rollouts.name_in_dry_run(
            explanation, lambda number: rollouts.active_rollout(pool, number)
        )
    )

"""Admin API handlers: parse the request, call the store, shape the JSON. No SQL here."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from aiohttp import web

from httpkit import query
from httpkit.auth import requires
from httpkit.errors import ApiError
from httpkit.json import json_response, read_object
from httpkit.keys import POOL, PRINCIPAL
from store import agents, audit, call_routing, calls, channels, snapshots, tokens
from store.diff import diff_configs, merge_patch

MAX_VERSION_NAME_CHARS = 200
MAX_DESCRIPTION_CHARS = 10_000


# --- request parsing -------------------------------------------------------------------------


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


def _text(body: dict[str, Any], field: str, limit: int, *, required: bool) -> str:
    value = body.get(field, None if required else "")
    if value is None and not required:
        value = ""
    if not isinstance(value, str) or (required and not value.strip()) or len(value) > limit:
        raise ApiError(
            422,
            "invalid_request",
            f"{field} must be {'a non-empty' if required else 'a'} string of at most {limit} chars",
            [{"path": field, "message": "invalid"}],
        )
    if "\x00" in value:
        raise ApiError(
            422,
            "invalid_request",
            f"{field} contains a NUL character",
            [{"path": field, "message": "control characters are not allowed"}],
        )
    return value


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


async def _with_config(request: web.Request) -> dict[str, Any]:
    """A request body that must carry a `config` (validated later, with field paths)."""
    body = await read_object(request)
    if "config" not in body:
        raise ApiError(
            422,
            "invalid_config",
            "config is required",
            [{"path": "config", "message": "Field required"}],
        )
    return body


# --- agents and drafts -----------------------------------------------------------------------


@requires("editor")
async def create_agent(request: web.Request) -> web.Response:
    body = await _with_config(request)
    config = body["config"]
    # A config that is not an object is left for validation to name as such.
    if "name" in body and isinstance(config, dict):
        config = {**config, "name": body["name"]}
    agent = await agents.create_agent(request.app[POOL], config, request[PRINCIPAL].name)
    return json_response(
        agent_json(agent), status=201, headers={"Location": f"/v1/agents/{agent.id}"}
    )


@requires("viewer")
async def list_agents(request: web.Request) -> web.Response:
    items, cursor = await agents.list_agents(
        request.app[POOL], limit=query.limit(request), cursor=request.query.get("cursor")
    )
    return _listing([agent_json(a) for a in items], cursor)


@requires("viewer")
async def get_agent(request: web.Request) -> web.Response:
    agent = await agents.get_agent(request.app[POOL], request.match_info["agent_id"])
    return json_response(agent_json(agent))


@requires("viewer")
async def get_draft(request: web.Request) -> web.Response:
    agent = await agents.get_agent(request.app[POOL], request.match_info["agent_id"])
    return _draft_response(agent.draft)


@requires("editor")
async def put_draft(request: web.Request) -> web.Response:
    body = await _with_config(request)
    draft = await agents.update_draft(
        request.app[POOL],
        request.match_info["agent_id"],
        lambda _current: body["config"],
        request[PRINCIPAL].name,
        if_match=_if_match(request),
    )
    return _draft_response(draft)


@requires("editor")
async def patch_draft(request: web.Request) -> web.Response:
    patch = await read_object(request)
    if set(patch) - {"config"} or not isinstance(patch.get("config", {}), dict):
        raise ApiError(
            422,
            "invalid_request",
            "a draft merge patch may only change config, with an object",
            [{"path": next(iter(set(patch) - {"config"}), "config"), "message": "not patchable"}],
        )
    draft = await agents.update_draft(
        request.app[POOL],
        request.match_info["agent_id"],
        lambda current: merge_patch(current, patch.get("config", {})),
        request[PRINCIPAL].name,
        if_match=_if_match(request),
    )
    return _draft_response(draft)


# --- versions --------------------------------------------------------------------------------


@requires("publisher")
async def publish(request: web.Request) -> web.Response:
    body = await read_object(request)
    version = await agents.publish(
        request.app[POOL],
        request.match_info["agent_id"],
        _text(body, "name", MAX_VERSION_NAME_CHARS, required=True),
        _text(body, "description", MAX_DESCRIPTION_CHARS, required=False),
        request[PRINCIPAL].name,
    )
    location = f"/v1/agents/{version.agent_id}/versions/{version.version}"
    return json_response(version_json(version), status=201, headers={"Location": location})


@requires("viewer")
async def list_versions(request: web.Request) -> web.Response:
    history = await agents.history(
        request.app[POOL],
        request.match_info["agent_id"],
        limit=query.limit(request),
        cursor=request.query.get("cursor"),
    )
    summary = {k: v for k, v in draft_json(history.draft).items() if k != "config"}
    return _listing([version_json(v) for v in history.versions], history.next_cursor, draft=summary)


@requires("viewer")
async def get_version(request: web.Request) -> web.Response:
    version = await agents.get_version(
        request.app[POOL], request.match_info["agent_id"], _version_param(request)
    )
    return json_response(version_json(version), headers={"ETag": f'"{version.config_hash}"'})


@requires("viewer")
async def diff_version(request: web.Request) -> web.Response:
    pool, agent_id = request.app[POOL], request.match_info["agent_id"]
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


@requires("publisher")
async def restore(request: web.Request) -> web.Response:
    draft = await agents.restore(
        request.app[POOL],
        request.match_info["agent_id"],
        _version_param(request),
        request[PRINCIPAL].name,
    )
    return _draft_response(draft)


# --- channels --------------------------------------------------------------------------------


def _number(request: web.Request) -> str:
    return channels.parse_number(request.match_info["number"])


@requires("publisher")
async def put_channel(request: web.Request) -> web.Response:
    number = _number(request)
    variants, sticky = channels.parse_routing(await read_object(request))
    routing = await channels.set_channel(
        request.app[POOL],
        number,
        variants,
        sticky,
        request[PRINCIPAL].name,
        if_revision=_if_match(request),
    )
    return json_response(routing.public(), headers={"ETag": f'"{routing.revision}"'})


@requires("viewer")
async def get_channel(request: web.Request) -> web.Response:
    routing = await channels.get_channel(request.app[POOL], _number(request))
    return json_response(routing.public(), headers={"ETag": f'"{routing.revision}"'})


@requires("publisher")
async def delete_channel(request: web.Request) -> web.Response:
    await channels.delete_channel(request.app[POOL], _number(request), request[PRINCIPAL].name)
    return web.Response(status=204)


@requires("viewer")
async def list_channels(request: web.Request) -> web.Response:
    items, cursor = await channels.list_channels(
        request.app[POOL],
        limit=query.limit(request),
        cursor=request.query.get("cursor"),
        agent_id=request.query.get("agent_id"),
    )
    return _listing([r.public() for r in items], cursor)


# --- audit and tokens ------------------------------------------------------------------------


@requires("viewer")
async def list_audit(request: web.Request) -> web.Response:
    items, cursor = await audit.list_entries(
        request.app[POOL],
        limit=query.limit(request),
        cursor=request.query.get("cursor"),
        agent_id=request.query.get("agent_id"),
        channel=request.query.get("channel"),
        action=request.query.get("action"),
    )
    return _listing([asdict(e) for e in items], cursor)


@requires("admin")
async def create_token(request: web.Request) -> web.Response:
    body = await read_object(request)
    name = _text(body, "name", MAX_VERSION_NAME_CHARS, required=True)
    role = body.get("role")
    if role not in tokens.ROLES:
        raise ApiError(
            422,
            "invalid_request",
            f"role must be one of {', '.join(tokens.ROLES)}",
            [{"path": "role", "message": "invalid"}],
        )
    secret = await tokens.create_token(request.app[POOL], name, role)
    return json_response({"name": name, "role": role, "token": secret}, status=201)


# --- the signed-in principal (the web console asks what its token may do) ---------------------


@requires("viewer", "runtime")
async def whoami(request: web.Request) -> web.Response:
    """Any valid token: its principal's name and role."""
    principal = request[PRINCIPAL]
    return json_response({"name": principal.name, "role": principal.role})


@requires("viewer")
async def resolve(request: web.Request) -> web.Response:
    """Dry run straight from Postgres: which variant and version a call would get, and why."""
    pool = request.app[POOL]
    explanation = await call_routing.explain(
        query.required(request, "to"),
        request.query.get("from", ""),
        request.query.get("call_id"),
        routing_of=lambda number: channels.find_channel(pool, number),
        snapshot_of=lambda variant: snapshots.load_variant(pool, variant),
        assignment_of=lambda number, key: calls.find_assignment(pool, number, key),
    )
    return json_response(explanation)

"""The OpenAPI 3.1 document of the admin API, served at GET /openapi.json.

The configuration's schema is generated from the pydantic model that validates it, so the two
cannot disagree; tests check that every route the app registers is described here.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from httpkit.json import json_response
from store.calls_analysis import SENTIMENTS
from store.config import AgentConfig
from store.pagination import DEFAULT_LIMIT, MAX_LIMIT
from store.tokens import ROLES

JSON = "application/json"
SCHEMAS = "#/components/schemas/"

# --- building blocks -------------------------------------------------------------------------


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": SCHEMAS + name}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """A closed object: `required` properties always present, `optional` ones may be."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": False,
    }


def _page(item: str, **beside: dict[str, Any]) -> dict[str, Any]:
    """A list resource: `{"items": [...], "next_cursor"}` plus `beside` (history's draft)."""
    return _object(
        {
            **beside,
            "items": {"type": "array", "items": _ref(item)},
            "next_cursor": _nullable({"type": "string"}),
        }
    )


def _content(schema: dict[str, Any], media_type: str = JSON) -> dict[str, Any]:
    return {"content": {media_type: {"schema": schema}}}


def _ok(schema: dict[str, Any], description: str = "OK", **headers: str) -> dict[str, Any]:
    response = {"description": description, **_content(schema)}
    if headers:
        response["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return response


# Error responses by status; every one carries the Error body.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Malformed JSON, body, query or cursor"),
    401: ("Unauthorized", "No token, or not a valid one"),
    403: ("Forbidden", "The token's role is too low"),
    404: ("NotFound", "No such resource"),
    409: ("Conflict", "The change conflicts with the current state"),
    412: ("PreconditionFailed", "If-Match names a revision that is not the current one"),
    413: ("PayloadTooLarge", "The request body is larger than the service accepts"),
    415: ("UnsupportedMediaType", "The body is not sent as application/json"),
    422: ("Unprocessable", "The document is invalid; details name each field path"),
}
AUTH_ERRORS = (401, 403)
BODY_ERRORS = (400, 413, 415, 422)


def _op(
    summary: str,
    role: str | tuple[str, ...] | None,
    responses: dict[int, dict[str, Any]],
    *,
    params: tuple[str, ...] = (),
    parameters: tuple[dict[str, Any], ...] = (),
    body: dict[str, Any] | None = None,
    errors: tuple[int, ...] = (),
    media_types: tuple[str, ...] = (JSON,),
) -> dict[str, Any]:
    """One operation; `role` is the lowest role allowed (None: no token needed)."""
    operation: dict[str, Any] = {"summary": summary}
    statuses = dict(sorted(responses.items()))
    if role is not None:
        roles = (role,) if isinstance(role, str) else role
        operation["description"] = f"Needs the {' or '.join(roles)} role (or a higher one)."
        operation["security"] = [{"bearer": []}]
        errors = AUTH_ERRORS + errors
    else:
        operation["security"] = []
    listed = [{"$ref": f"#/components/parameters/{p}"} for p in params] + list(parameters)
    if listed:
        operation["parameters"] = listed
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {media_type: {"schema": body} for media_type in media_types},
        }
        errors = errors + BODY_ERRORS
    for status in sorted(set(errors)):
        statuses[status] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
    operation["responses"] = {str(status): response for status, response in statuses.items()}
    return operation


def _query(
    name: str, schema: dict[str, Any], description: str, *, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


# --- schemas ---------------------------------------------------------------------------------

STRING = {"type": "string"}
TIMESTAMP = {"type": "string", "format": "date-time"}
HASH = {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "SHA-256 of canonical JSON"}
E164 = {"type": "string", "pattern": r"^\+[1-9][0-9]{1,14}$", "examples": ["+14155550100"]}
REVISION = {"type": "integer", "minimum": 1}
VERSION_NUMBER = {"type": "integer", "minimum": 1}
NAME = {"type": "string", "minLength": 1, "maxLength": 200}
ANY: dict[str, Any] = {}


def _config_schemas() -> dict[str, Any]:
    """AgentConfig and the sections it refers to, straight from the validating model."""
    schema = AgentConfig.model_json_schema(ref_template=SCHEMAS + "{model}")
    sections: dict[str, Any] = schema.pop("$defs", {})
    return {"AgentConfig": schema, **sections}


DRAFT_FIELDS: dict[str, Any] = {
    "revision": REVISION,
    "config_hash": HASH,
    "updated_at": TIMESTAMP,
    "updated_by": STRING,
}
VERSION_FIELDS: dict[str, Any] = {
    "agent_id": STRING,
    "version": VERSION_NUMBER,
    "name": STRING,
    "description": STRING,
    "author": STRING,
    "published_at": TIMESTAMP,
    "config_hash": HASH,
}
VARIANT = _object(
    {
        "label": {"type": "string", "minLength": 1, "maxLength": 64},
        "agent_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "version": {**_nullable(VERSION_NUMBER), "description": "null serves the agent's draft"},
        "weight": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
    }
)
STICKY = {"type": "string", "enum": ["caller", "call"], "default": "caller"}
CALL = _object(
    {
        "call_id": STRING,
        "provider": STRING,
        "provider_call_id": STRING,
        "channel": STRING,
        "from": STRING,
        "agent_id": STRING,
        "version": {**_nullable(VERSION_NUMBER), "description": "null when the draft was served"},
        "draft_revision": _nullable(REVISION),
        "config_hash": HASH,
        "variant": STRING,
        "status": STRING,
        "started_at": TIMESTAMP,
        "ended_at": _nullable(TIMESTAMP),
        "duration_s": _nullable({"type": "number", "minimum": 0}),
        "sentiment": _nullable({"type": "string", "enum": list(SENTIMENTS)}),
        "automated": _nullable({"type": "boolean"}),
    },
    {"analysis": _nullable({"type": "object"})},
)
REPORT_ITEM = {
    "type": "object",
    "description": "One group's outcomes: calls, duration, sentiment and automation rate with "
    "confidence intervals, and the comparison with the baseline",
    "additionalProperties": True,
}

SCHEMAS_BY_NAME: dict[str, Any] = {
    **_config_schemas(),
    "Error": _object(
        {
            "error": _object(
                {
                    "code": {"type": "string", "description": "stable machine-readable name"},
                    "message": STRING,
                    "details": {"description": "what exactly failed, e.g. a list of FieldError"},
                }
            )
        }
    ),
    "FieldError": _object({"path": STRING, "message": STRING}),
    "Draft": _object({**DRAFT_FIELDS, "config": _ref("AgentConfig")}),
    "DraftSummary": _object(DRAFT_FIELDS),
    "Agent": _object(
        {
            "id": STRING,
            "name": STRING,
            "created_at": TIMESTAMP,
            "draft": _ref("Draft"),
            "latest_version": _nullable(VERSION_NUMBER),
        }
    ),
    "Version": _object({**VERSION_FIELDS, "config": _ref("AgentConfig")}),
    "VersionSummary": _object(VERSION_FIELDS),
    "Variant": VARIANT,
    "Channel": _object(
        {
            "number": E164,
            "sticky": STICKY,
            "revision": REVISION,
            "variants": {"type": "array", "items": _ref("Variant")},
            "updated_at": TIMESTAMP,
            "updated_by": STRING,
        }
    ),
    "AuditEntry": _object(
        {
            "id": {"type": "integer"},
            "at": TIMESTAMP,
            "actor": STRING,
            "action": {"type": "string", "examples": ["version.publish", "channel.weights"]},
            "agent_id": _nullable(STRING),
            "channel": _nullable(STRING),
            "before": ANY,
            "after": ANY,
        }
    ),
    "Call": CALL,
    "Diff": _object(
        {
            "agent_id": STRING,
            "from": _object({"version": VERSION_NUMBER}),
            "to": {
                "oneOf": [
                    _object({"version": VERSION_NUMBER}),
                    _object({"draft": {"const": True}, "revision": REVISION}),
                ]
            },
            "patch": {
                "type": "array",
                "description": "RFC 6902 JSON Patch turning `from` into `to`",
                "items": _object(
                    {
                        "op": {"enum": ["add", "remove", "replace", "move", "copy", "test"]},
                        "path": STRING,
                    },
                    {"value": ANY, "from": STRING},
                ),
            },
            "summary": {
                "type": "array",
                "items": _object(
                    {"section": STRING, "changes": {"type": "array", "items": STRING}}
                ),
            },
        }
    ),
    "AgentList": _page("Agent"),
    "History": _page("VersionSummary", draft=_ref("DraftSummary")),
    "ChannelList": _page("Channel"),
    "AuditList": _page("AuditEntry"),
    "CallList": _page("Call"),
    "Principal": _object({"name": STRING, "role": {"enum": list(ROLES)}}),
    "NewToken": _object({"name": NAME, "role": {"enum": list(ROLES)}, "token": {"type": "string"}}),
    "Guardrails": _object(
        {
            "number": E164,
            "rules": {
                "type": "array",
                "items": _object(
                    {
                        "metric": STRING,
                        "op": STRING,
                        "threshold": {"type": "number"},
                        "min_calls": {"type": "integer"},
                    }
                ),
            },
            "updated_at": _nullable(TIMESTAMP),
            "updated_by": _nullable(STRING),
        }
    ),
    "VersionsReport": {
        "type": "object",
        "required": ["agent_id", "items"],
        "properties": {
            "agent_id": STRING,
            "since": _nullable(STRING),
            "until": _nullable(STRING),
            "channel": _nullable(STRING),
            "baseline": _nullable(VERSION_NUMBER),
            "split_draft": {"type": "boolean"},
            "items": {"type": "array", "items": REPORT_ITEM},
        },
    },
    "AbReport": {
        "type": "object",
        "required": ["channel", "items"],
        "properties": {
            "channel": E164,
            "since": _nullable(STRING),
            "until": _nullable(STRING),
            "baseline": _nullable(STRING),
            "items": {"type": "array", "items": REPORT_ITEM},
        },
    },
}

# --- request bodies --------------------------------------------------------------------------

CREATE_AGENT = _object(
    {"config": _ref("AgentConfig")},
    {"name": {**NAME, "description": "sets config.name"}},
)
PUT_DRAFT = {
    "type": "object",
    "required": ["config"],
    "properties": {"config": _ref("AgentConfig")},
    "description": "Read-only fields of the draft resource (revision, ...) are ignored.",
}
PATCH_DRAFT = _object(
    {},
    {"config": {"type": "object", "description": "RFC 7396 merge patch of the configuration"}},
)
PUBLISH = _object(
    {"name": NAME}, {"description": _nullable({"type": "string", "maxLength": 10_000})}
)
PUT_CHANNEL = {
    "oneOf": [
        _object(
            {"agent_id": STRING},
            {"version": _nullable(VERSION_NUMBER), "sticky": STICKY},
        ),
        _object(
            {"variants": {"type": "array", "minItems": 1, "maxItems": 20, "items": VARIANT}},
            {"sticky": STICKY},
        ),
    ],
    "description": "A pin `{agent_id, version}` (version null: the draft) or weighted variants.",
}
CREATE_TOKEN = _object({"name": NAME, "role": {"enum": list(ROLES)}})
ANALYSIS = {
    "type": "object",
    "description": "The voice agent's results: sentiment, automated, and the analysis fields "
    "the served configuration's call_analysis declares",
    "properties": {
        "sentiment": {"enum": ["positive", "neutral", "negative"]},
        "automated": {"type": "boolean"},
        "fields": {"type": "object"},
    },
}
GUARDRAILS = {"type": "object", "description": "The channel's guardrail rules"}

# --- paths -----------------------------------------------------------------------------------

LIST_QUERY = (
    _query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "page size",
    ),
    _query("cursor", STRING, "next_cursor of the previous page (same filters)"),
)
WINDOW_QUERY = (
    _query("since", TIMESTAMP, "from this time (inclusive)"),
    _query("until", TIMESTAMP, "to this time (exclusive)"),
)
DRAFT_ETAG = {"ETag": "the draft revision, quoted; send it back in If-Match"}
CHANNEL_ETAG = {"ETag": "the routing revision, quoted; send it back in If-Match"}
IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'The ETag of the draft or channel this edit is based on ("3"); 412 when stale',
    "schema": STRING,
}

RESOLUTION = {
    "type": "object",
    "description": "`rule` is draw, remembered, redraw, or fallback (with `reason`); routed "
    "answers name the channel, variant, agent_id, version, config_hash and the draw value u",
    "required": ["to", "from", "rule"],
    "properties": {
        "to": STRING,
        "from": STRING,
        "rule": {"type": "string", "enum": ["draw", "remembered", "redraw", "fallback"]},
        "reason": STRING,
        "channel": E164,
        "variant": STRING,
        "agent_id": STRING,
        "version": _nullable(VERSION_NUMBER),
        "draft_revision": _nullable(REVISION),
        "config_hash": HASH,
        "u": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    },
}

AGENT = "/v1/agents/{agent_id}"
VERSION = AGENT + "/versions/{n}"
CHANNEL = "/v1/channels/{number}"
CALL_PATH = "/v1/calls/{call_id}"

PATHS: dict[str, Any] = {
    "/v1/agents": {
        "post": _op(
            "Create an agent with its initial draft",
            "editor",
            {201: _ok(_ref("Agent"), "Created", Location="the agent's URL")},
            body=CREATE_AGENT,
        ),
        "get": _op(
            "List agents, newest first",
            "viewer",
            {200: _ok(_ref("AgentList"))},
            parameters=LIST_QUERY,
            errors=(400,),
        ),
    },
    AGENT: {
        "get": _op(
            "Read an agent",
            "viewer",
            {200: _ok(_ref("Agent"))},
            params=("AgentId",),
            errors=(404,),
        )
    },
    AGENT + "/draft": {
        "get": _op(
            "Read the draft",
            "viewer",
            {200: _ok(_ref("Draft"), **DRAFT_ETAG)},
            params=("AgentId",),
            errors=(404,),
        ),
        "put": _op(
            "Replace the draft's configuration (revision + 1)",
            "editor",
            {200: _ok(_ref("Draft"), **DRAFT_ETAG)},
            params=("AgentId",),
            parameters=(IF_MATCH,),
            body=PUT_DRAFT,
            errors=(404, 412),
        ),
        "patch": _op(
            "Edit the draft with a JSON merge patch (RFC 7396) of the draft resource",
            "editor",
            {200: _ok(_ref("Draft"), **DRAFT_ETAG)},
            params=("AgentId",),
            parameters=(IF_MATCH,),
            body=PATCH_DRAFT,
            errors=(404, 412),
            media_types=(JSON, "application/merge-patch+json"),
        ),
    },
    AGENT + "/versions": {
        "post": _op(
            "Publish the draft as the next version (the draft is unchanged)",
            "publisher",
            {201: _ok(_ref("Version"), "Created", Location="the version's URL")},
            params=("AgentId",),
            body=PUBLISH,
            errors=(404,),
        ),
        "get": _op(
            "History: the draft's summary, then versions newest first",
            "viewer",
            {200: _ok(_ref("History"))},
            params=("AgentId",),
            parameters=LIST_QUERY,
            errors=(400, 404),
        ),
    },
    VERSION: {
        "get": _op(
            "Read one version's full snapshot",
            "viewer",
            {200: _ok(_ref("Version"), ETag="the config hash, quoted")},
            params=("AgentId", "N"),
            errors=(404,),
        )
    },
    VERSION + "/diff": {
        "get": _op(
            "Diff version n against another version or the draft",
            "viewer",
            {200: _ok(_ref("Diff"))},
            params=("AgentId", "N"),
            parameters=(
                _query(
                    "against",
                    {"type": "string", "pattern": "^(draft|[0-9]{1,9})$", "default": "draft"},
                    "a version number, or `draft`",
                ),
            ),
            errors=(400, 404),
        )
    },
    VERSION + "/restore": {
        "post": _op(
            "Overwrite the draft with version n (revision + 1); no version is made",
            "publisher",
            {200: _ok(_ref("Draft"), **DRAFT_ETAG)},
            params=("AgentId", "N"),
            errors=(404,),
        )
    },
    "/v1/channels": {
        "get": _op(
            "List channels by number",
            "viewer",
            {200: _ok(_ref("ChannelList"))},
            parameters=(
                *LIST_QUERY,
                _query("agent_id", STRING, "only channels routing to this agent"),
            ),
            errors=(400,),
        )
    },
    CHANNEL: {
        "put": _op(
            "Set a number's routing: a pin or weighted A/B variants",
            "publisher",
            {200: _ok(_ref("Channel"), **CHANNEL_ETAG)},
            params=("Number",),
            parameters=(IF_MATCH,),
            body=PUT_CHANNEL,
            errors=(412,),
        ),
        "get": _op(
            "Read a number's routing",
            "viewer",
            {200: _ok(_ref("Channel"), **CHANNEL_ETAG)},
            params=("Number",),
            errors=(404, 422),
        ),
        "delete": _op(
            "Remove a number's routing",
            "publisher",
            {204: {"description": "Deleted"}},
            params=("Number",),
            errors=(404, 422),
        ),
    },
    CHANNEL + "/guardrails": {
        "get": _op(
            "Read a channel's A/B guardrails",
            "viewer",
            {200: _ok(_ref("Guardrails"))},
            params=("Number",),
            errors=(404, 422),
        ),
        "put": _op(
            "Set a channel's A/B guardrails",
            "publisher",
            {200: _ok(_ref("Guardrails"))},
            params=("Number",),
            body=GUARDRAILS,
            errors=(404,),
        ),
    },
    "/v1/calls": {
        "get": _op(
            "List calls, newest first, filtered",
            "viewer",
            {200: _ok(_ref("CallList"))},
            parameters=(
                _query("agent_id", STRING, "served by this agent"),
                _query("version", STRING, "a version number, or `draft`"),
                _query("variant", STRING, "variant label"),
                _query("channel", E164, "the number called"),
                _query("status", STRING, "the provider's last status, e.g. `completed`"),
                _query("sentiment", {"type": "string", "enum": list(SENTIMENTS)}, "analysed"),
                _query("automated", {"type": "boolean"}, "analysed as fully automated"),
                *WINDOW_QUERY,
                *LIST_QUERY,
            ),
            errors=(400,),
        )
    },
    CALL_PATH: {
        "get": _op(
            "Read one call",
            ("runtime", "viewer"),
            {200: _ok(_ref("Call"))},
            params=("CallId",),
            errors=(404,),
        )
    },
    CALL_PATH + "/analysis": {
        "post": _op(
            "Record the voice agent's results for a call",
            ("runtime", "editor"),
            {200: _ok(_ref("Call"))},
            params=("CallId",),
            body=ANALYSIS,
            errors=(404, 409),
        )
    },
    "/v1/analytics/versions": {
        "get": _op(
            "Outcomes per version of an agent, with confidence intervals and comparisons",
            "viewer",
            {200: _ok(_ref("VersionsReport"))},
            parameters=(
                _query("agent_id", STRING, "the agent", required=True),
                *WINDOW_QUERY,
                _query("channel", E164, "only calls to this number"),
                _query("baseline", VERSION_NUMBER, "the version others are compared with"),
                _query("split_draft", {"type": "boolean"}, "one group per draft revision"),
            ),
            errors=(400, 404),
        )
    },
    "/v1/analytics/ab": {
        "get": _op(
            "Outcomes per variant of a channel's A/B test",
            "viewer",
            {200: _ok(_ref("AbReport"))},
            parameters=(
                _query("channel", E164, "the number", required=True),
                *WINDOW_QUERY,
                _query("baseline", STRING, "the variant label others are compared with"),
            ),
            errors=(400, 422),
        )
    },
    "/v1/audit": {
        "get": _op(
            "The audit log, newest first",
            "viewer",
            {200: _ok(_ref("AuditList"))},
            parameters=(
                *LIST_QUERY,
                _query("agent_id", STRING, "entries about this agent"),
                _query("channel", STRING, "entries about this number"),
                _query("action", STRING, "e.g. version.publish, channel.pin"),
            ),
            errors=(400,),
        )
    },
    "/v1/tokens": {
        "post": _op(
            "Create an API token; its secret is shown once",
            "admin",
            {201: _ok(_ref("NewToken"), "Created")},
            body=CREATE_TOKEN,
        )
    },
    "/v1/resolve": {
        "get": _op(
            "Dry run: which variant and version a call would get now, and why; records nothing",
            "viewer",
            {200: _ok(RESOLUTION)},
            parameters=(
                _query("to", STRING, "the number dialled", required=True),
                _query("from", STRING, "the caller"),
                _query("call_id", STRING, "the provider call id, for channels sticky by call"),
            ),
            errors=(400,),
        )
    },
    "/v1/whoami": {
        "get": _op(
            "The calling token's principal",
            ("runtime", "viewer"),
            {200: _ok(_ref("Principal"))},
        )
    },
    "/metrics": {
        "get": _op(
            "Prometheus exposition of the admin service",
            None,
            {200: {"description": "OK", **_content({"type": "string"}, "text/plain")}},
        )
    },
    "/openapi.json": {
        "get": _op(
            "This document",
            None,
            {200: _ok({"type": "object"})},
        )
    },
}


def _path_parameter(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "agentver admin",
        "version": "1",
        "description": "Agents, drafts, immutable versions, channel routing, calls, analytics.",
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS_BY_NAME,
        "parameters": {
            "AgentId": _path_parameter("agent_id", STRING, "the agent's id"),
            "N": _path_parameter("n", VERSION_NUMBER, "a version number"),
            "Number": _path_parameter("number", E164, "the channel's number in E.164"),
            "CallId": _path_parameter("call_id", STRING, "the call's id"),
        },
        "responses": {
            name: {"description": description, **_content(_ref("Error"))}
            for name, description in ERRORS.values()
        },
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "security": [{"bearer": []}],
}


async def serve(request: web.Request) -> web.Response:
    """The document; public, so tools can read it before they hold a token."""
    return json_response(DOCUMENT)

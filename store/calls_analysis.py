"""A call's analysis: the voice agent's results, checked against the config the call was served."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from store import audit
from store.errors import CallNotFound, InvalidConfig

SENTIMENTS = ("positive", "neutral", "negative")
# The JSON types each call_analysis field type accepts (bool is not a number here, although
# Python says it is an int).
_FIELD_CHECKS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
}

_CALL_COLUMNS = """
call_id, provider, provider_call_id, channel, from_number, agent_id, version, draft_revision,
config_hash, variant, status, started_at, ended_at, duration_s, sentiment, automated, analysis
"""
SELECT_CALL = "SELECT" + _CALL_COLUMNS + "FROM calls WHERE call_id = $1"
# The served config's analysis fields come along: a post is validated against exactly those.
LOCK_CALL = (
    "SELECT"
    + _CALL_COLUMNS
    + """, b.config -> 'call_analysis' -> 'fields' AS analysis_fields
FROM calls JOIN config_blobs b ON b.hash = calls.config_hash
WHERE call_id = $1
FOR UPDATE OF calls
"""
)
UPDATE_ANALYSIS = (
    "UPDATE calls SET sentiment = $2, automated = $3, analysis = $4 WHERE call_id = $1 RETURNING"  # noqa: S608 (module constants only)
    + _CALL_COLUMNS
)


class InvalidAnalysis(InvalidConfig):
    code = "invalid_analysis"


@dataclass(frozen=True)
class Analysis:
    sentiment: str
    automated: bool
    fields: dict[str, Any]


@dataclass(frozen=True)
class Call:
    call_id: str
    provider: str
    provider_call_id: str
    channel: str
    from_number: str
    agent_id: str
    version: int | None  # None: the draft was served
    draft_revision: int | None
    config_hash: str
    variant: str
    status: str
    started_at: datetime
    ended_at: datetime | None
    duration_s: float | None
    sentiment: str | None
    automated: bool | None
    analysis: dict[str, Any] | None  # {"fields", "posted_at", "posted_by"} once analysed

    def public(self) -> dict[str, Any]:
        """The call resource of the API (DESIGN.md section 3), with its analysis or null."""
        return {
            "call_id": self.call_id,
            "provider": self.provider,
            "provider_call_id": self.provider_call_id,
            "channel": self.channel,
            "from": self.from_number,
            "agent_id": self.agent_id,
            "version": self.version,
            "draft_revision": self.draft_revision,
            "config_hash": self.config_hash,
            "variant": self.variant,
            "status": self.status,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": self.duration_s,
            "sentiment": self.sentiment,
            "automated": self.automated,
            "analysis": self.analysis_json(),
        }

    def analysis_json(self) -> dict[str, Any] | None:
        if self.analysis is None:
            return None
        return {"sentiment": self.sentiment, "automated": self.automated, **self.analysis}


def _call(row: asyncpg.Record) -> Call:
    return Call(**{k: row[k] for k in Call.__dataclass_fields__})


def _fail(path: str, message: str) -> InvalidAnalysis:
    return InvalidAnalysis("analysis is invalid", [{"path": path, "message": message}])


def _check_fields(fields: Any, declared: list[dict[str, Any]]) -> dict[str, Any]:
    """`fields` checked against the served config's call_analysis.fields.

    A declared field may be missing or null (the agent could not tell); an undeclared one, or
    a value of the wrong JSON type, is refused with its path.
    """
    if not isinstance(fields, dict):
        raise _fail("fields", "must be an object")
    types = {f["name"]: f["type"] for f in declared}
    problems = []
    for name, value in fields.items():
        path = f"fields.{name}"
        if name not in types:
            problems.append({"path": path, "message": "not a call_analysis field of this config"})
        elif value is not None and (
            isinstance(value, bool) != (types[name] == "boolean")
            or not isinstance(value, _FIELD_CHECKS[types[name]])
        ):
            problems.append({"path": path, "message": f"must be of type {types[name]}"})
    if problems:
        raise InvalidAnalysis("analysis fields do not match the served config", problems)
    return fields


def parse_analysis(body: dict[str, Any], declared: list[dict[str, Any]]) -> Analysis:
    """The analysis in a POST body, its fields validated against `declared`."""
    unknown = set(body) - {"sentiment", "automated", "fields"}
    if unknown:
        raise _fail(sorted(unknown)[0], "unknown field")
    if body.get("sentiment") not in SENTIMENTS:
        raise _fail("sentiment", f"must be one of {', '.join(SENTIMENTS)}")
    if not isinstance(body.get("automated"), bool):
        raise _fail("automated", "must be true or false")
    return Analysis(
        body["sentiment"], body["automated"], _check_fields(body.get("fields", {}), declared)
    )


async def get_call(pool: asyncpg.Pool, call_id: str) -> Call:
    row = await pool.fetchrow(SELECT_CALL, call_id)
    if row is None:
        raise CallNotFound(f"no call {call_id}")
    return _call(row)


async def record_analysis(
    pool: asyncpg.Pool, call_id: str, body: dict[str, Any], actor: str
) -> Call:
    """Validate and store a call's analysis, replacing any earlier one; audited."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(LOCK_CALL, call_id)
        if row is None:
            raise CallNotFound(f"no call {call_id}")
        analysis = parse_analysis(body, row["analysis_fields"] or [])
        before = _call(row)
        stored = {
            "fields": analysis.fields,
            "posted_at": datetime.now(UTC).isoformat(),
            "posted_by": actor,
        }
        after = _call(
            await conn.fetchrow(
                UPDATE_ANALYSIS, call_id, analysis.sentiment, analysis.automated, stored
            )
        )
        await audit.record(
            conn,
            actor,
            "call.analysis",
            agent_id=after.agent_id,
            channel=after.channel,
            before={"call_id": call_id, "analysis": before.analysis_json()},
            after={"call_id": call_id, "analysis": after.analysis_json()},
        )
    return after

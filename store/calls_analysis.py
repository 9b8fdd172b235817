"""A call's analysis: the voice agent's results, checked against the config the call was served."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from store import audit, schemas
from store.calls import CALL_BY_ID, CALL_COLUMNS, CALL_REF_MATCHES, CallRecord, CallRef, call_record
from store.errors import InvalidConfig
from store.validation import CONTROL_MESSAGE, NUL, parse

# The JSON types each call_analysis field type accepts (bool is not a number here, although
# Python says it is an int).
_FIELD_CHECKS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
}

_CALL_COLUMNS = CALL_COLUMNS + ", analysis "
# The served config's analysis fields come along: a post is validated against exactly those.
LOCK_CALL = (
    "SELECT"
    + _CALL_COLUMNS
    + """, b.config -> 'call_analysis' -> 'fields' AS analysis_fields
FROM calls JOIN config_blobs b ON b.hash = calls.config_hash
WHERE """
    + CALL_REF_MATCHES
    + """
FOR UPDATE OF calls
"""
)
UPDATE_ANALYSIS = (
    "UPDATE calls SET sentiment = $2, automated = $3, analysis = $4 WHERE started_at = "  # noqa: S608 (module constants only)
    + CALL_BY_ID
    + " RETURNING"
    + _CALL_COLUMNS
)


class InvalidAnalysis(InvalidConfig):
    code = "invalid_analysis"


def _check_fields(fields: dict[str, Any], declared: list[dict[str, Any]]) -> None:
    """`fields` checked against the served config's call_analysis.fields.

    A declared field may be missing or null (the agent could not tell); an undeclared one, a
    value of the wrong JSON type, or text holding a NUL (which jsonb cannot store), is refused
    with its path.
    """
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
        elif isinstance(value, str) and NUL in value:
            problems.append({"path": path, "message": CONTROL_MESSAGE})
    if problems:
        raise InvalidAnalysis("analysis fields do not match the served config", problems)


def parse_analysis(body: Any, declared: list[dict[str, Any]]) -> schemas.Analysis:
    """The analysis in a POST body, its fields validated against `declared`."""
    analysis = parse(schemas.Analysis, body, InvalidAnalysis, "analysis is invalid")
    _check_fields(analysis.fields, declared)
    return analysis


async def record_analysis(pool: asyncpg.Pool, ref: CallRef, body: Any, actor: str) -> CallRecord:
    """Validate and store a call's analysis, replacing any earlier one; audited."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(LOCK_CALL, *ref.args())
        if row is None:
            raise ref.not_found()
        analysis = parse_analysis(body, row["analysis_fields"] or [])
        before = call_record(row)
        call_id = before.call_id
        stored = {
            "fields": analysis.fields,
            "posted_at": datetime.now(UTC).isoformat(),
            "posted_by": actor,
        }
        after = call_record(
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

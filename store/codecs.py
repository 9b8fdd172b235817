"""Redis cache entries: key names, lifetimes and one msgpack codec per cached type.

Every payload carries `v`, its schema version: an entry written by another schema (or garbage)
fails to decode, which callers treat as a cache miss, never as an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import msgpack

from store.calls import CallRecord
from store.channels import Routing, Variant
from store.snapshots import Snapshot

T = TypeVar("T")

SCHEMA_VERSION = 1

# Key names, below the deployment's Settings.redis_prefix (e.g. "agentver:routing:+1415...").
ROUTING_KEY = "routing:"  # + E.164 number; mutable: invalidated through the change feed
DRAFT_KEY = "draft:"  # + agent id; mutable: invalidated through the change feed
VERSION_KEY = "version:"  # + agent id + ":" + number; immutable
# + config hash; immutable: the blob as the JSON bytes the API answers with, encoded once
CONFIG_JSON_KEY = "config-json:"
MUTABLE_KEYS = (ROUTING_KEY, DRAFT_KEY)
# + provider + ":" + provider call id; set once (SET NX) by the worker that spooled the call
CALL_CLAIM_KEY = "call-claim:"

# Seconds. Mutable entries are deleted on every change notification; the TTL is only a backstop
# for a notification every worker missed, so it bounds staleness without costing hit rate.
MUTABLE_TTL_S = 3600
# Seconds. Immutable entries are never stale; the TTL only lets Redis drop what nobody reads.
IMMUTABLE_TTL_S = 7 * 24 * 3600
# Seconds. A claim answers a provider's retries of a spooled call, and a retry only matters while
# the caller is still on the line: minutes. 15 of them hold, at 100 spooled calls/s, about
# 90,000 claims of some 400 bytes (36 MB) at most.
CALL_CLAIM_TTL_S = 15 * 60


class CacheDecodeError(ValueError):
    """A cached payload that this code cannot read: treat it as a miss."""


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How one cached type is named and (de)serialised, and whether it can change."""

    kind: str
    prefix: str
    mutable: bool
    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T]


def _pack(fields: dict[str, Any]) -> bytes:
    return msgpack.packb({"v": SCHEMA_VERSION, **fields}, use_bin_type=True)


def _unpack(raw: bytes) -> dict[str, Any]:
    try:
        data = msgpack.unpackb(raw, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CacheDecodeError(f"not msgpack: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != SCHEMA_VERSION:
        raise CacheDecodeError("unknown payload schema")
    return data


def _get(data: dict[str, Any], name: str, *types: type) -> Any:
    value = data.get(name)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise CacheDecodeError(f"field {name} is missing or mistyped")
    return value


def encode_routing(routing: Routing | None) -> bytes:
    """A channel's routing; None records that the number is not a channel (negative entry)."""
    if routing is None:
        return _pack({"absent": True})
    return _pack(
        {
            "number": routing.number,
            "salt": routing.salt,
            "sticky": routing.sticky,
            "revision": routing.revision,
            "variants": [[v.label, v.agent_id, v.version, v.weight] for v in routing.variants],
            "updated_at": routing.updated_at.isoformat(),
            "updated_by": routing.updated_by,
        }
    )


def decode_routing(raw: bytes) -> Routing | None:
    data = _unpack(raw)
    if data.get("absent") is True:
        return None
    try:
        variants = tuple(
            Variant(str(label), str(agent_id), version, int(weight))
            for label, agent_id, version, weight in _get(data, "variants", list)
        )
        updated_at = datetime.fromisoformat(_get(data, "updated_at", str))
    except (TypeError, ValueError):
        raise CacheDecodeError("variants or updated_at malformed") from None
    return Routing(
        number=_get(data, "number", str),
        salt=_get(data, "salt", str),
        sticky=_get(data, "sticky", str),
        revision=_get(data, "revision", int),
        variants=variants,
        updated_at=updated_at,
        updated_by=_get(data, "updated_by", str),
    )


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return _pack(
        {
            "agent_id": snapshot.agent_id,
            "version": snapshot.version,
            "draft_revision": snapshot.draft_revision,
            "config_hash": snapshot.config_hash,
        }
    )


def decode_snapshot(raw: bytes) -> Snapshot:
    data = _unpack(raw)
    return Snapshot(
        agent_id=_get(data, "agent_id", str),
        version=_get(data, "version", int, type(None)),
        draft_revision=_get(data, "draft_revision", int, type(None)),
        config_hash=_get(data, "config_hash", str),
    )


def encode_config_json(body: bytes) -> bytes:
    return _pack({"json": body})


def decode_config_json(raw: bytes) -> bytes:
    body: bytes = _get(_unpack(raw), "json", bytes)
    return body


def _time(data: dict[str, Any], name: str) -> datetime:
    raw = _get(data, name, str)
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        raise CacheDecodeError(f"field {name} is not a time") from None


def encode_call_claim(record: CallRecord) -> bytes:
    """A spooled call's record, as a provider retry of it must be answered (no analysis: a
    spooled call has none)."""
    return _pack(
        {
            "call_id": record.call_id,
            "provider": record.provider,
            "provider_call_id": record.provider_call_id,
            "channel": record.channel,
            "from_number": record.from_number,
            "agent_id": record.agent_id,
            "version": record.version,
            "draft_revision": record.draft_revision,
            "config_hash": record.config_hash,
            "variant": record.variant,
            "routing_revision": record.routing_revision,
            "status": record.status,
            "started_at": record.started_at.isoformat(),
            "ended_at": record.ended_at.isoformat() if record.ended_at else None,
            "duration_s": record.duration_s,
            "sentiment": record.sentiment,
            "automated": record.automated,
        }
    )


def decode_call_claim(raw: bytes) -> CallRecord:
    data = _unpack(raw)
    return CallRecord(
        call_id=_get(data, "call_id", str),
        provider=_get(data, "provider", str),
        provider_call_id=_get(data, "provider_call_id", str),
        channel=_get(data, "channel", str),
        from_number=_get(data, "from_number", str),
        agent_id=_get(data, "agent_id", str),
        version=_get(data, "version", int, type(None)),
        draft_revision=_get(data, "draft_revision", int, type(None)),
        config_hash=_get(data, "config_hash", str),
        variant=_get(data, "variant", str),
        routing_revision=_get(data, "routing_revision", int),
        status=_get(data, "status", str),
        started_at=_time(data, "started_at"),
        ended_at=None if data.get("ended_at") is None else _time(data, "ended_at"),
        duration_s=_get(data, "duration_s", float, int, type(None)),
        sentiment=_get(data, "sentiment", str, type(None)),
        automated=_get(data, "automated", bool, type(None)),
    )


ROUTING = Codec[Routing | None]("routing", ROUTING_KEY, True, encode_routing, decode_routing)
DRAFT = Codec[Snapshot]("draft", DRAFT_KEY, True, encode_snapshot, decode_snapshot)
VERSION = Codec[Snapshot]("version", VERSION_KEY, False, encode_snapshot, decode_snapshot)
CONFIG_JSON = Codec[bytes]("config", CONFIG_JSON_KEY, False, encode_config_json, decode_config_json)
CALL_CLAIM = Codec[CallRecord](
    "call_claim", CALL_CLAIM_KEY, False, encode_call_claim, decode_call_claim
)

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

# Seconds. Mutable entries are deleted on every change notification; the TTL is only a backstop
# for a notification every worker missed, so it bounds staleness without costing hit rate.
MUTABLE_TTL_S = 3600
# Seconds. Immutable entries are never stale; the TTL only lets Redis drop what nobody reads.
IMMUTABLE_TTL_S = 7 * 24 * 3600


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


ROUTING = Codec[Routing | None]("routing", ROUTING_KEY, True, encode_routing, decode_routing)
DRAFT = Codec[Snapshot]("draft", DRAFT_KEY, True, encode_snapshot, decode_snapshot)
VERSION = Codec[Snapshot]("version", VERSION_KEY, False, encode_snapshot, decode_snapshot)
CONFIG_JSON = Codec[bytes]("config", CONFIG_JSON_KEY, False, encode_config_json, decode_config_json)

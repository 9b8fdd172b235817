"""The codec of a call claim (router/claims.py): a spooled call's record as Redis holds it for
a provider retry reaching another worker; whatever does not decode is refused, never guessed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgpack
import pytest

from store.calls import CallRecord
from store.codecs import CALL_CLAIM, SCHEMA_VERSION, CacheDecodeError
from tests.call_rows import RECORDED_CALL

# Microseconds too: a retry's answer must be the record, to the last digit.
SPOOLED = RECORDED_CALL._replace(started_at=RECORDED_CALL.started_at.replace(microsecond=678901))


@pytest.mark.parametrize(
    "record",
    [
        SPOOLED,
        SPOOLED._replace(version=3, draft_revision=None, provider="generic", variant="b"),
        SPOOLED._replace(
            status="completed",
            ended_at=datetime(2026, 1, 2, 3, 5, tzinfo=UTC),
            duration_s=54.3,
            sentiment="positive",
            automated=False,
        ),
        SPOOLED._replace(duration_s=0, from_number="anonymous ☎"),
    ],
    ids=["draft", "version", "ended", "integral duration"],
)
def test_a_claim_round_trips(record: CallRecord) -> None:
    assert CALL_CLAIM.decode(CALL_CLAIM.encode(record)) == record


def _packed(**changes: Any) -> bytes:
    fields = msgpack.unpackb(CALL_CLAIM.encode(SPOOLED), raw=False)
    fields.update(changes)
    return msgpack.packb({k: v for k, v in fields.items() if v is not ...}, use_bin_type=True)


@pytest.mark.parametrize(
    "raw",
    [
        b"\xc1garbage",
        _packed(v=SCHEMA_VERSION + 1),
        _packed(call_id=...),
        _packed(version="3"),
        _packed(automated=1),
        _packed(started_at="yesterday"),
        _packed(ended_at=12),
        msgpack.packb([SCHEMA_VERSION]),
    ],
    ids=[
        "not msgpack",
        "newer schema",
        "no call id",
        "version as text",
        "int for bool",
        "bad time",
        "ended_at not a time",
        "not a map",
    ],
)
def test_an_unreadable_claim_is_refused(raw: bytes) -> None:
    with pytest.raises(CacheDecodeError):
        CALL_CLAIM.decode(raw)

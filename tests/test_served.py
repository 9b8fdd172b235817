"""The served-snapshot memory behind a call's config lookup: newest calls kept, oldest dropped."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from router.served import ServedSnapshots
from store.calls import CallRecord
from store.snapshots import Snapshot

RECORD = CallRecord(
    call_id="call_1",
    provider="twilio",
    provider_call_id="CA1",
    channel="+14155550100",
    from_number="+12125550123",
    agent_id="agt_1",
    version=None,
    draft_revision=3,
    config_hash="c" * 64,
    variant="a",
    routing_revision=1,
    status="initiated",
    started_at=datetime(2026, 1, 2, tzinfo=UTC),
    ended_at=None,
    duration_s=None,
    sentiment=None,
    automated=None,
)


def test_the_oldest_call_is_forgotten_first() -> None:
    served = ServedSnapshots(size=2)
    for n in (1, 2, 3):
        served.remember(replace(RECORD, call_id=f"call_{n}"))

    assert served.get("call_1") is None
    assert served.get("call_3") == Snapshot("agt_1", None, 3, "c" * 64)

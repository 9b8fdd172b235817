"""The served-snapshot memory behind a call's config lookup: newest calls kept, oldest dropped."""

from __future__ import annotations

from router.served import ServedSnapshots
from store.snapshots import Snapshot
from tests.call_rows import RECORDED_CALL

# What the snapshot below is made of, spelled out.
RECORD = RECORDED_CALL._replace(
    agent_id="agt_1", version=None, draft_revision=3, config_hash="c" * 64
)


def test_the_oldest_call_is_forgotten_first() -> None:
    served = ServedSnapshots(size=2)
    for n in (1, 2, 3):
        served.remember(RECORD._replace(call_id=f"call_{n}"))

    assert served.get("call_1") is None
    assert served.get("call_3") == Snapshot("agt_1", None, 3, "c" * 64)

"""What this worker served its recent calls, for the voice agent's config lookup moments later."""

from __future__ import annotations

from collections import OrderedDict

from store.calls import CallRecord
from store.snapshots import Snapshot

# Calls whose served snapshot a worker remembers (about 300 bytes each): the voice agent asks for
# its call's config seconds after the answer, so this covers well over a minute of calls at the
# worker's peak rate. Older calls, and other workers' calls, are looked up in Postgres.
SERVED_CALLS = 50_000


class ServedSnapshots:
    """The snapshot each recent call was recorded (or spooled) as served, by call id, oldest
    forgotten first. Those fields of a call never change, so nothing is ever invalidated."""

    def __init__(self, size: int = SERVED_CALLS) -> None:
        self._size = size
        self._snapshots: OrderedDict[str, Snapshot] = OrderedDict()

    def remember(self, record: CallRecord) -> None:
        self._snapshots[record.call_id] = Snapshot(
            record.agent_id, record.version, record.draft_revision, record.config_hash
        )
        while len(self._snapshots) > self._size:
            self._snapshots.popitem(last=False)

    def get(self, call_id: str) -> Snapshot | None:
        """What `call_id` was served, if this worker still remembers it."""
        return self._snapshots.get(call_id)

"""Tokens' last-used times, gathered in memory per worker and written in one statement every
few seconds: authenticating a request never writes to Postgres."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncpg
import structlog

from store.tokens import record_last_used

# Seconds between two writes of the last-used times: a "last used" shown to the minute needs no
# more, and a busy worker then writes one statement per interval, whatever its request rate.
FLUSH_INTERVAL_S = 10.0
# Seconds a write may take; one that fails is retried with the next, merged with newer uses.
FLUSH_TIMEOUT_S = 2.0

log = structlog.get_logger()


class TokenUsage:
    """When each token was last used on this worker, since the last flush."""

    def __init__(self) -> None:
        # Seconds since the epoch: marked on every authenticated request, made datetimes only
        # when flushed (datetime.now costs several times time.time).
        self._used: dict[int, float] = {}

    def mark(self, token_id: int) -> None:
        self._used[token_id] = time.time()

    async def flush(self, pool: asyncpg.Pool) -> None:
        """Write the pending times; on any failure keep them for the next flush."""
        if not self._used:
            return
        used, self._used = self._used, {}
        times = {token_id: datetime.fromtimestamp(at, UTC) for token_id, at in used.items()}
        try:
            await record_last_used(pool, times, FLUSH_TIMEOUT_S)
        # Whatever kept Postgres from taking them (down, slow): they wait for the next flush.
        except Exception as exc:
            log.warning("token_usage_flush_failed", error=type(exc).__name__, tokens=len(used))
            for token_id, at in used.items():
                self._used[token_id] = max(at, self._used.get(token_id, at))

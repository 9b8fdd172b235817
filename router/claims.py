"""Claims on spooled calls, shared by every worker through Redis, so that a provider's retry of
a call spooled by one worker, reaching another while Postgres is still unavailable, is answered
what the first answer was (same call id, same variant) instead of being spooled again under a
new call id that the replay would never insert (it keeps the first record of a provider call id).

A worker about to spool calls claims each one's provider call id with `SET NX` (value: the
record it will spool, store/codecs.py CALL_CLAIM), in one round trip per batch. A call claimed
already is answered with the claimed record and not spooled. Only the spool path claims: a
call committed to Postgres finds its earlier record there.

Best effort: Redis sits behind its breaker (the one the caches share), and while it is down the
calls are spooled unclaimed, as a lone worker's would be (its spool index answers its own
retries). docs/design.md section 6 says what a retry gets then. The claim is taken before the
spool write, as a call spooled unclaimed could not be withdrawn when its claim turns out to be
another's; so a claim waits at most CLAIM_TIMEOUT_S, not the caches' Redis timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import redis.asyncio as aioredis
import structlog

from store.breaker import CircuitBreaker
from store.cache import REDIS_UNAVAILABLE
from store.calls import CallRecord
from store.codecs import CALL_CLAIM, CALL_CLAIM_TTL_S, CacheDecodeError

log = structlog.get_logger()

CallKey = tuple[str, str]  # (provider, provider call id)
T = TypeVar("T")

# Seconds a claim may take before the calls are spooled unclaimed. A healthy Redis answers a
# batch's claims in about a millisecond; until the breaker opens, every spooled batch waits this
# long on a Redis that dropped off the network, so it is a fifth of the caches' 0.5 s
# (router/app.py): a partitioned Redis during a Postgres outage then costs a call 0.1 s at
# worst, not 0.5 s (tests/test_faults_workers.py measures it).
CLAIM_TIMEOUT_S = 0.1


def record_key(record: CallRecord) -> CallKey:
    return record.provider, record.provider_call_id


class CallClaims:
    """Claims on provider call ids, as Redis keys below `prefix`."""

    def __init__(self, redis: aioredis.Redis, prefix: str, breaker: CircuitBreaker) -> None:
        self._redis = redis
        self._prefix = prefix + CALL_CLAIM.prefix
        self._breaker = breaker

    def key(self, call: CallKey) -> str:
        """The Redis key of a claim."""
        provider, provider_call_id = call
        return f"{self._prefix}{provider}:{provider_call_id}"

    async def claim(self, records: Sequence[CallRecord]) -> dict[CallKey, CallRecord]:
        """Claim each call for its record; returns the calls claimed earlier (by any worker)
        with the record they must be answered. Nothing is claimed, and nothing returned, while
        Redis is unavailable."""
        if not records:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for record in records:
            key = self.key(record_key(record))
            pipe.set(key, CALL_CLAIM.encode(record), nx=True, ex=CALL_CLAIM_TTL_S)
            pipe.get(key)
        replies = await self._call(pipe.execute, "call_claim_unavailable", len(records))
        if replies is None:
            return {}
        earlier: dict[CallKey, CallRecord] = {}
        for record, won, held in zip(records, replies[0::2], replies[1::2], strict=True):
            if won or held is None:  # held None: the claim expired between SET and GET
                continue
            try:
                earlier[record_key(record)] = CALL_CLAIM.decode(held)
            except CacheDecodeError:
                # Another schema's claim: this call is spooled as if unclaimed.
                log.warning("call_claim_unreadable", provider=record.provider)
        return earlier

    async def release(self, calls: Sequence[CallKey]) -> None:
        """Withdraw claims this worker took for calls it then failed to spool, so a retry
        elsewhere is not answered a record that will never land. Best effort."""
        if calls:
            keys = [self.key(call) for call in calls]
            await self._call(
                lambda: self._redis.unlink(*keys), "call_claim_release_failed", len(keys)
            )

    async def _call(self, op: Callable[[], Awaitable[T]], event: str, calls: int) -> T | None:
        """`op`'s result; None (logged as `event`) while Redis is unavailable: its breaker is
        open, or `op` failed for want of a server or took longer than CLAIM_TIMEOUT_S."""
        if not self._breaker.allow():
            return None
        try:
            result = await asyncio.wait_for(op(), CLAIM_TIMEOUT_S)
        except REDIS_UNAVAILABLE as exc:  # TimeoutError included
            self._breaker.failed()
            log.warning(event, calls=calls, error=type(exc).__name__)
            return None
        self._breaker.succeeded()
        return result

"""A read-through cache in three tiers: in-process LRU (L1), Redis, then a loader (Postgres).

Immutable entries (published versions, config blobs) are cached for good. Mutable ones (routing,
drafts) are served from cache only while the cache is `trusted`, i.e. while the change feed is
connected and has resynced since its last outage; otherwise they are read from the loader.

Degraded modes: Redis sits behind a circuit breaker, so while it is down lookups go from L1
straight to the loader without waiting on it; a loaded value is written to Redis after its
callers have it. When the loader (Postgres) is unavailable, an
untrusted mutable entry is served from what the cache last held (the L1 copy kept when trust
was lost, else Redis): a possibly stale routing beats no answer to a phone call. A failed
Redis delete leaves Redis `suspect` of stale mutable entries: they are not read until a wipe of
every mutable key succeeds with no delete failing meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from store.breaker import CircuitBreaker
from store.codecs import IMMUTABLE_TTL_S, MUTABLE_KEYS, MUTABLE_TTL_S, CacheDecodeError, Codec
from store.db import is_data_error

T = TypeVar("T")

Observe = Callable[[str, str, str], None]
"""Told (kind, tier, result) on every lookup step: tier l1|redis|postgres, result hit|miss|..."""

# Entries per process: every channel's routing (about 1 KB each) and every snapshot in use
# (a few hundred bytes) of a deployment of 100,000 channels, with room to spare, so a call's
# lookups are L1 hits in steady state; at most about 150 MB. Callers size the L1 of caches
# holding bigger values (config blobs) down.
DEFAULT_L1_SIZE = 150_000
SCAN_BATCH = 500
# Seconds a wipe of every mutable key may take (a few hundred round trips for 100,000 channels):
# one held up past it by a Redis that answers too slowly is given up, and the next lookup starts
# another, so that a wipe in flight can never keep Redis unread for good.
WIPE_TIMEOUT_S = 10.0

REDIS_UNAVAILABLE = (OSError, RedisError)

_MISSING: Any = object()

log = structlog.get_logger()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class LayeredCache:
    """L1 → Redis → loader, with one load per key at a time (single flight)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        prefix: str,
        observe: Observe,
        l1_size: int = DEFAULT_L1_SIZE,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._redis = redis
        self.breaker = breaker or CircuitBreaker()
        self._prefix = prefix
        self._observe = observe
        self._l1_size = l1_size
        self._l1: OrderedDict[str, tuple[bool, Any]] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Any]] = {}
        self._fills: set[asyncio.Task[None]] = set()
        # Keys invalidated while their load was running: that load must not fill the cache.
        self._invalidated: set[str] = set()
        # Mutable entries as last known while untrusted: served only when the loader fails.
        self._stale: OrderedDict[str, Any] = OrderedDict()
        # Keys whose Redis delete is in flight: a read overtaking it could find the stale entry.
        self._deleting: dict[str, int] = {}
        self._redis_suspect = False
        # Failed deletes so far: a wipe clears the suspicion only if none failed while it ran.
        self._failed_deletes = 0
        self._wipe: asyncio.Task[None] | None = None
        self.trusted = False

    def key(self, codec: Codec[Any], key: str) -> str:
        """The full Redis key of an entry."""
        return self._prefix + codec.prefix + key

    async def get(self, codec: Codec[T], key: str, load: Callable[[], Awaitable[T]]) -> T:
        """The entry for `key`, from the first tier that has it; `load` fills the misses."""
        full = self.key(codec, key)
        cacheable = not codec.mutable or self.trusted
        if codec.mutable and self._redis_suspect:
            self._start_wipe()
        if cacheable:
            entry = self._l1.get(full)
            if entry is not None:
                self._l1.move_to_end(full)
                self._observe(codec.kind, "l1", "hit")
                value: T = entry[1]
                return value
            self._observe(codec.kind, "l1", "miss")
        flight = self._inflight.get(full)
        if flight is None:
            flight = self._start_fill(codec, full, load, cacheable)
        result: T = await asyncio.shield(flight)
        return result

    def _start_fill(
        self, codec: Codec[T], full: str, load: Callable[[], Awaitable[T]], cacheable: bool
    ) -> asyncio.Future[T]:
        """A flight for `full`: a future its callers await, settled by a task that then writes
        what it loaded to Redis. The key stays in flight until that write is over, so an
        invalidation meanwhile still deletes after it."""
        value: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inflight[full] = value
        task = asyncio.ensure_future(self._fill(codec, full, load, cacheable, value))
        self._fills.add(task)
        task.add_done_callback(lambda t: self._landed(full, value, t))
        return value

    def _landed(self, full: str, value: asyncio.Future[Any], task: asyncio.Task[None]) -> None:
        self._fills.discard(task)
        if self._inflight.get(full) is value:
            del self._inflight[full]
            self._invalidated.discard(full)
        if not value.done():  # the task was cancelled before it ran
            value.cancel()
        if not value.cancelled():
            value.exception()  # retrieved here so an unawaited failure is not reported twice

    async def _fill(
        self,
        codec: Codec[T],
        full: str,
        load: Callable[[], Awaitable[T]],
        cacheable: bool,
        value: asyncio.Future[T],
    ) -> None:
        try:
            found, loaded = await self._find(codec, full, load, cacheable)
        except asyncio.CancelledError:
            value.cancel()
            raise
        except Exception as exc:
            value.set_exception(exc)
            return
        value.set_result(found)
        # After the answer: a call never waits on a Redis write (a silent Redis costs a timeout).
        if loaded and full not in self._invalidated:
            await self._to_redis(codec, full, found)
            # Invalidated while the write was in flight: the delete may have run before it.
            if full in self._invalidated:
                await self._delete_redis(full)

    async def _find(
        self, codec: Codec[T], full: str, load: Callable[[], Awaitable[T]], cacheable: bool
    ) -> tuple[T, bool]:
        """The entry's value, and whether it was loaded (and is worth writing to Redis)."""
        if cacheable and self._redis_readable(codec, full):
            cached = await self._from_redis(codec, full)
            if cached is not _MISSING:
                self._to_l1(codec, full, cached)
                return cached, False
        try:
            value = await load()
        except Exception as exc:
            if is_data_error(exc):
                raise
            failure = exc
        else:
            self._observe(codec.kind, "postgres", "hit")
            if full not in self._invalidated:
                if cacheable:
                    self._to_l1(codec, full, value)
                else:
                    self._keep_stale(full, value)
            return value, True
        # Out of the except block: this module is compiled, and mypyc corrupts an exception
        # re-raised by a bare `raise` after an await in its handler (docs/design.md, section 4).
        stale = await self._last_known(codec, full, cacheable)
        if stale is _MISSING:
            raise failure
        return stale, False

    async def _last_known(self, codec: Codec[Any], full: str, redis_read: bool) -> Any:
        """An entry for when the loader is unavailable, or _MISSING: L1's (a warm-up's preload,
        whose resync may have ended while this load was in flight), else one kept when trust
        was lost, else (unless Redis was read already) Redis's untrusted one."""
        entry = self._l1.get(full)
        if entry is not None:
            self._observe(codec.kind, "l1", "stale")
            return entry[1]
        if full in self._stale:
            self._observe(codec.kind, "l1", "stale")
            return self._stale[full]
        if redis_read or not self._redis_readable(codec, full):
            return _MISSING
        return await self._from_redis(codec, full)

    def _keep_stale(self, full: str, value: Any) -> None:
        self._stale[full] = value
        self._stale.move_to_end(full)
        while len(self._stale) > self._l1_size:
            self._stale.popitem(last=False)

    def _redis_readable(self, codec: Codec[Any], full: str) -> bool:
        return not (codec.mutable and (self._redis_suspect or full in self._deleting))

    def _to_l1(self, codec: Codec[Any], full: str, value: Any) -> None:
        if full not in self._invalidated:
            self._put_l1(full, codec.mutable, value)

    def _put_l1(self, full: str, mutable: bool, value: Any) -> None:
        self._l1[full] = (mutable, value)
        self._l1.move_to_end(full)
        while len(self._l1) > self._l1_size:
            self._l1.popitem(last=False)

    async def _call_redis(self, kind: str, op: Callable[[], Awaitable[Any]]) -> Any:
        """`op`'s result, or _MISSING when Redis failed or its breaker is open (no wait)."""
        if not self.breaker.allow():
            self._observe(kind, "redis", "skipped")
            return _MISSING
        try:
            result = await op()
        except REDIS_UNAVAILABLE:
            self.breaker.failed()
            self._observe(kind, "redis", "error")
            return _MISSING
        self.breaker.succeeded()
        return result

    async def _from_redis(self, codec: Codec[T], full: str) -> Any:
        raw = await self._call_redis(codec.kind, lambda: self._redis.get(full))
        if raw is _MISSING:
            return _MISSING
        if raw is None:
            self._observe(codec.kind, "redis", "miss")
            return _MISSING
        try:
            value = codec.decode(raw if isinstance(raw, bytes) else raw.encode())
        except CacheDecodeError:
            self._observe(codec.kind, "redis", "decode_error")
            return _MISSING
        self._observe(codec.kind, "redis", "hit")
        return value

    async def _to_redis(self, codec: Codec[T], full: str, value: T) -> None:
        ttl = MUTABLE_TTL_S if codec.mutable else IMMUTABLE_TTL_S
        await self._call_redis(
            codec.kind, lambda: self._redis.set(full, codec.encode(value), ex=ttl)
        )

    async def _delete_redis(self, *keys: str) -> None:
        if await self._call_redis("any", lambda: self._redis.unlink(*keys)) is _MISSING:
            # The entry may outlive its change in Redis: keep Redis out of mutable reads.
            if not self._redis_suspect:
                log.warning("cache_redis_suspect", prefix=self._prefix, keys=len(keys))
            self._redis_suspect = True
            self._failed_deletes += 1

    async def invalidate(self, codec: Codec[Any], key: str) -> None:
        """Forget a mutable entry in every tier (a change notification arrived for it)."""
        full = self.key(codec, key)
        self._l1.pop(full, None)
        self._stale.pop(full, None)
        if full in self._inflight:
            self._invalidated.add(full)
        self._deleting[full] = self._deleting.get(full, 0) + 1
        try:
            await self._delete_redis(full)
        finally:
            self._deleting[full] -= 1
            if not self._deleting[full]:
                del self._deleting[full]

    def lose_trust(self) -> None:
        """The change feed is down: stop serving mutable entries from any tier (but keep them
        for when the loader is unavailable too)."""
        self.trusted = False
        for full, (mutable, value) in list(self._l1.items()):
            if mutable:
                del self._l1[full]
                self._keep_stale(full, value)
        self._invalidated.update(self._inflight)

    async def resync(self, warm: Callable[[], Awaitable[bool]] | None = None) -> None:
        """The change feed is listening again: clear every mutable entry, let `warm` preload
        fresh ones (see `preload`; it says whether it loaded them all), then trust the cache.

        Preloading here is safe because the feed already listens: a change committed after
        `warm` read its data is announced, and applied (invalidating the entry) once this
        returns. When Redis cannot be cleared now, it is left suspect (unread for mutable
        entries) until a later wipe succeeds: the cache is trusted either way.
        """
        self.lose_trust()
        self._redis_suspect = True
        await self._wipe_redis()
        complete = await warm() if warm is not None else True
        # Only now, and only once every entry is fresh: a call whose load fails (Postgres just
        # back, its breaker not yet closed again, or gone again mid-warm-up) is served the last
        # known entry, as during the outage, rather than the fallback.
        if complete:
            self._stale.clear()
        self.trusted = True

    def preload(self, codec: Codec[T], key: str, value: T) -> None:
        """Put an entry just read from the source of truth into L1 (a warm-up in `resync`).

        Even over a load in flight that lost trust (`_invalidated`): that load read before the
        feed listened, this one after, so this one is fresh; skipped, the key would be left out
        of a warm-up that otherwise completes, with no last known entry to serve should
        Postgres go away again before a call loads it. The last known entry stays until the
        warm-up is over: until then calls do not read L1, and it is all they have should their
        load fail."""
        self._put_l1(self.key(codec, key), codec.mutable, value)

    def _start_wipe(self) -> None:
        if self._wipe is None or self._wipe.done():
            self._wipe = asyncio.ensure_future(self._wipe_redis())

    async def _wipe_redis(self) -> None:
        """Delete every mutable entry from Redis, then read mutable entries from it again."""
        if not self.breaker.allow():
            return
        # Still suspect while the wipe runs: an entry it has not reached yet may be stale.
        failed_deletes = self._failed_deletes
        try:
            await asyncio.wait_for(self._unlink_mutable(), WIPE_TIMEOUT_S)
        except REDIS_UNAVAILABLE as exc:  # TimeoutError included
            self.breaker.failed()
            self._observe("any", "redis", "error")
            log.warning("cache_redis_wipe_failed", error=type(exc).__name__, prefix=self._prefix)
            return
        self.breaker.succeeded()
        # A delete that failed meanwhile may be of a key the wipe had already passed.
        if self._failed_deletes != failed_deletes:
            log.warning(
                "cache_redis_wipe_overtaken",
                failed_deletes=self._failed_deletes - failed_deletes,
                prefix=self._prefix,
            )
        elif self._redis_suspect:
            self._redis_suspect = False
            log.info("cache_redis_readable", prefix=self._prefix)

    async def _unlink_mutable(self) -> None:
        # SCAN's cursor by hand, not `async for` over scan_iter: this module is compiled
        # (docs/design.md, section 4). A batch of keys found is unlinked before the next SCAN.
        for prefix in MUTABLE_KEYS:
            pattern = _glob_escape(self._prefix + prefix) + "*"
            cursor = 0
            while True:
                cursor, found = await self._redis.scan(cursor, match=pattern, count=SCAN_BATCH)
                if found:
                    await self._redis.unlink(*found)
                if cursor == 0:
                    break

    async def close(self) -> None:
        """Stop a wipe and the Redis writes in progress (before the Redis client closes)."""
        tasks = [*self._fills, *([self._wipe] if self._wipe is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def mutable_l1_size(self) -> int:
        """How many mutable entries L1 holds (for tests and diagnostics)."""
        return sum(1 for mutable, _ in self._l1.values() if mutable)

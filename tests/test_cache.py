"""The layered cache's suspicion of Redis after a failed delete, against a Redis stand-in whose
deletes fail and whose scans wait on demand (the moments a real network makes unpredictable)."""

from __future__ import annotations

import asyncio
import gc
from typing import cast

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeout

from store import cache as cache_module
from store.cache import LayeredCache
from store.codecs import ROUTING_KEY, Codec
from store.db import DatabaseUnavailable
from tests.polling import eventually

# A mutable entry kept where routings are, whose Redis scan a wipe runs first.
ENTRY = Codec[str]("entry", ROUTING_KEY, True, str.encode, bytes.decode)
STALE, FRESH = "stale", "fresh"
# Seconds a read may take while its Redis write is held: in memory it takes microseconds.
HELD_S = 1.0


class FlakyRedis:
    """The few commands the cache uses, in memory; `failing_deletes` UNLINKs time out, a SET
    waits for `writes` to be set, an UNLINK for `deletes`, and a SCAN, having listed its keys,
    for `scans`."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.commands: list[str] = []  # each write and delete that landed, in order
        self.failing_deletes = 0
        self.writes, self.deletes, self.scans = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._scanned: list[str] = []
        for gate in (self.writes, self.deletes, self.scans):
            gate.set()

    async def get(self, key: str) -> bytes | None:
        await asyncio.sleep(0)  # a round trip: the reader waits for it
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ex: int) -> None:
        await self.writes.wait()
        self.commands.append("SET " + key)
        self.data[key] = value

    async def unlink(self, *keys: str | bytes) -> int:
        await self.deletes.wait()
        if self.failing_deletes:
            self.failing_deletes -= 1
            raise RedisTimeout("held by the network")
        names = [k.decode() if isinstance(k, bytes) else k for k in keys]
        self.commands.append("UNLINK " + " ".join(names))
        return sum(self.data.pop(k, None) is not None for k in names)

    async def scan(self, cursor: int, match: str, count: int) -> tuple[int, list[bytes]]:
        """`count` keys at a time, from the keys there when the scan began (cursor 0), as a
        real SCAN returns every key present throughout, whatever is deleted meanwhile."""
        if cursor == 0:
            self._scanned = sorted(k for k in self.data if k.startswith(match.rstrip("*")))
        page = [k for k in self._scanned[cursor : cursor + count] if k in self.data]
        after = cursor + count if cursor + count < len(self._scanned) else 0
        await self.scans.wait()
        return after, [k.encode() for k in page]


def _cache(redis: FlakyRedis) -> LayeredCache:
    cache = LayeredCache(cast(aioredis.Redis, redis), "t:", lambda *_: None)
    cache.trusted = True
    return cache


async def _fresh() -> str:
    return FRESH


async def _stale() -> str:
    return STALE


async def _unavailable() -> str:
    raise DatabaseUnavailable("Postgres is gone")


async def _read(cache: LayeredCache, key: str = "a") -> str:
    return await cache.get(ENTRY, key, _fresh)


async def _changed_but_not_deleted(redis: FlakyRedis, cache: LayeredCache, key: str) -> None:
    """A change to `key` whose delete from Redis fails: Redis keeps the stale entry."""
    redis.data[cache.key(ENTRY, key)] = ENTRY.encode(STALE)
    redis.failing_deletes = 1
    await cache.invalidate(ENTRY, key)


async def test_a_read_does_not_wait_for_its_redis_write() -> None:
    redis = FlakyRedis()
    cache = _cache(redis)
    redis.writes.clear()
    assert await asyncio.wait_for(_read(cache), HELD_S) == FRESH
    redis.writes.set()

    async def written() -> bool:
        return cache.key(ENTRY, "a") in redis.data

    await eventually(written)
    await cache.close()


async def test_an_entry_invalidated_while_written_to_redis_is_deleted_after_the_write() -> None:
    redis = FlakyRedis()
    cache = _cache(redis)
    redis.writes.clear()
    await asyncio.wait_for(_read(cache), HELD_S)
    await cache.invalidate(ENTRY, "a")  # its delete lands before the write
    redis.writes.set()
    key = cache.key(ENTRY, "a")

    async def deleted_after_the_write() -> bool:
        return redis.commands == [f"UNLINK {key}", f"SET {key}", f"UNLINK {key}"]

    await eventually(deleted_after_the_write)
    await cache.close()


async def test_a_wipe_in_progress_keeps_redis_unread() -> None:
    redis = FlakyRedis()
    cache = _cache(redis)
    await _changed_but_not_deleted(redis, cache, "a")
    redis.scans.clear()
    # This read starts the wipe, which waits before deleting the stale entry.
    assert await _read(cache) == FRESH
    redis.scans.set()
    await cache.close()


async def test_a_delete_failing_during_a_wipe_leaves_redis_suspect() -> None:
    redis = FlakyRedis()
    cache = _cache(redis)
    await _changed_but_not_deleted(redis, cache, "a")
    redis.scans.clear()
    await _read(cache)  # starts the wipe
    await asyncio.sleep(0)
    # Another change while the wipe waits, after it listed its keys.
    await _changed_but_not_deleted(redis, cache, "b")
    redis.scans.set()

    async def wiped() -> bool:
        return cache.key(ENTRY, "a") not in redis.data

    await eventually(wiped)
    assert await _read(cache, "b") == FRESH
    await cache.close()


async def test_a_key_is_not_read_from_redis_while_its_delete_is_in_flight() -> None:
    redis = FlakyRedis()
    cache = _cache(redis)
    redis.data[cache.key(ENTRY, "a")] = ENTRY.encode(STALE)
    redis.deletes.clear()
    invalidating = asyncio.create_task(cache.invalidate(ENTRY, "a"))
    await asyncio.sleep(0)  # L1 forgot the entry; its delete from Redis waits
    assert await _read(cache) == FRESH
    redis.deletes.set()
    await invalidating


async def test_a_warm_up_preloads_a_key_whose_untrusted_load_is_in_flight() -> None:
    """A load begun while the feed was down (untrusted) is still in flight when the feed
    resyncs: the warm-up's fresh entry goes to L1 all the same, and is what a call gets once
    Postgres is gone again, rather than nothing (the fallback)."""
    cache = _cache(FlakyRedis())
    cache.lose_trust()
    loading, held = asyncio.Event(), asyncio.Event()

    async def slow() -> str:
        loading.set()
        await held.wait()
        return STALE

    in_flight = asyncio.create_task(cache.get(ENTRY, "a", slow))
    await loading.wait()

    async def warm() -> bool:
        cache.preload(ENTRY, "a", FRESH)
        return True

    await cache.resync(warm)
    held.set()
    assert await in_flight == STALE

    assert await cache.get(ENTRY, "a", _unavailable) == FRESH


async def test_a_call_during_a_warm_up_is_served_the_last_known_entry_after_its_preload() -> None:
    """Until the warm-up is over the cache is untrusted; a call whose load fails (Postgres'
    breaker not closed yet) gets the freshest entry it has: the one just preloaded."""
    cache = _cache(FlakyRedis())
    assert await cache.get(ENTRY, "a", _stale) == STALE
    cache.lose_trust()
    during: list[str] = []

    async def warm() -> bool:
        cache.preload(ENTRY, "a", FRESH)
        during.append(await cache.get(ENTRY, "a", _unavailable))
        return True

    await cache.resync(warm)
    assert during == [FRESH]
    assert await _read(cache) == FRESH


async def test_a_load_failing_after_the_resync_ended_gets_what_the_warm_up_preloaded() -> None:
    """A call that began untrusted, during the warm-up, whose load fails once the resync is over
    (the last known entries cleared): it gets what the warm-up preloaded, not the fallback."""
    cache = _cache(FlakyRedis())
    assert await cache.get(ENTRY, "a", _stale) == STALE
    cache.lose_trust()
    calls: list[asyncio.Task[str]] = []

    async def warm() -> bool:
        cache.preload(ENTRY, "a", FRESH)
        calls.append(asyncio.ensure_future(cache.get(ENTRY, "a", _unavailable)))
        await asyncio.sleep(0)  # the call begins, untrusted; its load is yet to run
        return True

    await cache.resync(warm)
    assert await calls[0] == FRESH


async def test_a_wipe_deletes_every_mutable_key_over_many_scans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wipe follows SCAN's cursor page by page, deleting each page before the next."""
    monkeypatch.setattr(cache_module, "SCAN_BATCH", 2)
    redis = FlakyRedis()
    cache = _cache(redis)
    for key in "abcde":
        redis.data[cache.key(ENTRY, key)] = ENTRY.encode(STALE)
    await _changed_but_not_deleted(redis, cache, "f")
    assert await _read(cache, "f") == FRESH  # starts the wipe

    async def wiped() -> bool:
        return not any(key.startswith(cache.key(ENTRY, "")) for key in redis.data)

    await eventually(wiped)
    pages = [" ".join(cache.key(ENTRY, k) for k in page) for page in ("ab", "cd", "ef")]
    unlinked = [c for c in redis.commands if c.startswith("UNLINK")]
    assert unlinked == [f"UNLINK {page}" for page in pages]
    assert await _read(cache, "a") == FRESH
    await cache.close()


async def test_a_failed_load_with_nothing_to_fall_back_on_raises_its_own_error() -> None:
    """Postgres' failure arrives through an awaited future; the untrusted cache then looks in
    Redis for a last known entry (an await) and finds none: the caller gets that failure,
    intact (this module is compiled: docs/design.md, section 4)."""
    redis = FlakyRedis()
    cache = _cache(redis)
    cache.trusted = False

    async def unavailable_later() -> str:
        failed: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(
            failed.set_exception, DatabaseUnavailable("Postgres is gone")
        )
        return await failed

    for _ in range(3):
        with pytest.raises(DatabaseUnavailable, match="Postgres is gone"):
            await cache.get(ENTRY, "a", unavailable_later)
        gc.collect()
    await cache.close()

"""The router application factory: resources opened in dependency order, closed in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web

from httpkit.errors import error_middleware
from httpkit.keys import POOL, SETTINGS
from router.keys import (
    CONFIGS,
    FALLBACK,
    FEED,
    METRICS,
    REDIS,
    RESOLVER,
    SNAPSHOTS,
    STREAM_URL,
    TELNYX,
    WRITER,
)
from router.metrics import RouterMetrics
from router.providers import check_stream_url, parse_fallback
from router.recorder import CallWriter
from router.resolve import Resolver
from router.routes import setup_routes
from router.telnyx import TelnyxApi
from store import cache
from store.db import create_pool
from store.feed import Change, ChangeFeed
from store.layered import LayeredCache
from store.settings import Settings

# Webhook bodies are a few KB; anything near this is not a provider.
MAX_BODY_BYTES = 256 * 1024
# Seconds. A slow Redis must not stall calls: past this a lookup counts as a miss.
REDIS_TIMEOUT_S = 0.5
# Config blobs reach hundreds of KB; a few hundred of them in L1 cover the configs in use.
CONFIG_L1_SIZE = 256
# Seconds start-up waits for the change feed; without it the router still serves, uncached.
FEED_STARTUP_WAIT_S = 5.0


class CacheInvalidation:
    """Applies the change feed to the snapshot cache (a store.feed.FeedHandler)."""

    def __init__(self, snapshots: LayeredCache, metrics: RouterMetrics) -> None:
        self._cache = snapshots
        self._metrics = metrics

    async def changed(self, change: Change) -> None:
        codec = cache.DRAFT if change.kind == "draft" else cache.ROUTING
        await self._cache.invalidate(codec, change.key)
        if change.at is not None:
            self._metrics.feed_lag.observe(max(0.0, time.time() - change.at))

    def lost(self) -> None:
        self._cache.lose_trust()
        self._metrics.feed_connected.set(0)

    async def resync(self) -> None:
        await self._cache.resync()
        self._metrics.feed_connected.set(1)


async def _background(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    app[POOL] = pool = await create_pool(app[SETTINGS].database_url)
    yield
    await pool.close()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings, metrics = app[SETTINGS], app[METRICS]
    app[REDIS] = client = aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
    )
    app[SNAPSHOTS] = snapshots = LayeredCache(client, settings.redis_prefix, metrics.observe_cache)
    app[CONFIGS] = LayeredCache(
        client, settings.redis_prefix, metrics.observe_cache, l1_size=CONFIG_L1_SIZE
    )
    app[RESOLVER] = Resolver(app[POOL], snapshots)
    yield
    await client.aclose()


async def _change_feed(app: web.Application) -> AsyncIterator[None]:
    feed = ChangeFeed(app[SETTINGS].database_url, CacheInvalidation(app[SNAPSHOTS], app[METRICS]))
    app[FEED] = feed
    task = asyncio.create_task(feed.run())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(feed.connected.wait(), FEED_STARTUP_WAIT_S)
    yield
    await _background(task)


async def _call_writer(app: web.Application) -> AsyncIterator[None]:
    app[WRITER] = writer = CallWriter(app[POOL])
    task = asyncio.create_task(writer.run())
    yield
    await _background(task)


async def _telnyx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with aiohttp.ClientSession() as session:
        app[TELNYX] = api = TelnyxApi(
            session, settings.telnyx_api_base, settings.telnyx_api_key, app[METRICS]
        )
        yield
        await api.drain()


def create_app(settings: Settings) -> web.Application:
    """The router: webhooks, runtime lookups and operations endpoints."""
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[METRICS] = RouterMetrics()
    app[FALLBACK] = parse_fallback(settings.fallback)
    app[STREAM_URL] = check_stream_url(settings.media_stream_url)
    app.cleanup_ctx.extend([_postgres, _redis, _change_feed, _call_writer, _telnyx])
    setup_routes(app)
    return app

"""The router application factory: resources opened in dependency order, closed in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import redis.asyncio as aioredis
import structlog
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from httpkit.auth import token_usage
from httpkit.errors import error_middleware
from httpkit.keys import FORGET_IDLE_SERIES, GUARD, POOL, SETTINGS, TOKENS
from httpkit.metrics_fanin import EXPOSITION
from httpkit.tasks import cancel_and_wait, forget_idle_series
from httpkit.token_cache import TokenCache
from router.calls import ROUTED_LOG_INTERVAL_S
from router.claims import CallClaims
from router.keys import (
    CLAIMS,
    CONFIGS,
    FALLBACK,
    FEED,
    KNOWN,
    METRICS,
    REDIS,
    RESOLVER,
    ROUTED_LOG,
    SNAPSHOTS,
    SPOOL,
    STREAM_TWIML,
    STREAM_URL,
    TELNYX,
    WRITER,
)
from router.metrics import RouterMetrics
from router.providers import StreamTwiml, check_stream_url, parse_fallback
from router.recorder import CallWriter
from router.resolver import Resolver
from router.routes import setup_routes
from router.spool import Spool
from router.telnyx import TelnyxApi
from store import codecs
from store.breaker import CircuitBreaker
from store.cache import LayeredCache
from store.calls import Known
from store.db import PostgresGuard, close_pool, create_pool
from store.feed import Change, ChangeFeed
from store.logs import Sampler
from store.settings import WEBHOOK_SECRET_VARIABLES, Settings

log = structlog.get_logger()

# Webhook bodies are a few KB; anything near this is not a provider.
MAX_BODY_BYTES = 256 * 1024
# Seconds. A slow Redis must not stall calls: past this a lookup counts as a miss.
REDIS_TIMEOUT_S = 0.5
# Config blobs in L1, one per agent version in use: 2,048 covers the configs a router with
# 1,000 busy channels serves (runtime lookups then need neither Redis nor Postgres). Blobs are
# held as their encoded JSON, a typical one 4 KB, so about 8 MB; blobs reach hundreds of KB, and
# a deployment serving many such configs would size this down.
CONFIG_L1_SIZE = 2048
# Seconds a stopping worker lets in-flight webhooks run: a webhook takes milliseconds, or at
# worst a Redis and a Postgres timeout, well under the providers' own 10-15 s.
SHUTDOWN_TIMEOUT_S = 10.0
# Seconds start-up waits for the change feed and the routing warm-up (about 2 s per 100,000
# channels on one core); past it the router serves anyway, reading Postgres until trusted.
FEED_STARTUP_WAIT_S = 15.0
# Seconds shutdown spends replaying the spool; what is left is replayed by the next worker.
SPOOL_SHUTDOWN_REPLAY_S = 10.0


class CacheInvalidation:
    """Applies the change feed to the snapshot cache, the token cache and the call writer's
    known agents and config blobs (a store.feed.FeedHandler)."""

    def __init__(
        self,
        snapshots: LayeredCache,
        tokens: TokenCache,
        known: Known,
        metrics: RouterMetrics,
        warm: Callable[[], Awaitable[bool]],
    ) -> None:
        self._cache = snapshots
        self._tokens = tokens
        self._known = known
        self._metrics = metrics
        self._warm = warm

    async def changed(self, change: Change) -> None:
        if change.kind == "token":
            self._tokens.revoke(int(change.key))
        else:
            codec = codecs.DRAFT if change.kind == "draft" else codecs.ROUTING
            await self._cache.invalidate(codec, change.key)
        if change.at is not None:
            self._metrics.feed_lag.observe(max(0.0, time.time() - change.at))

    def lost(self) -> None:
        # The connection went: the database may come back as another (a restore, a failover).
        self._cache.lose_trust()
        self._known.forget()
        self._metrics.feed_connected.set(0)

    async def resync(self) -> None:
        # And what was learned while the feed was away may be of the database before.
        self._known.forget()
        self._tokens.listening()
        await self._cache.resync(self._warm)
        self._metrics.feed_connected.set(1)


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    app[POOL] = pool = await create_pool(app[SETTINGS].database_url)
    # One breaker for all the work done on calls' behalf: commits, endings, replays, cache
    # misses, token and call lookups. Whichever finds Postgres down spares the others the wait.
    app[GUARD] = guard = PostgresGuard()
    app[METRICS].dependency_up.labels("postgres").set_function(
        lambda: float(guard.breaker.available)
    )
    yield
    await close_pool(pool)


async def _redis(app: web.Application) -> AsyncIterator[None]:
    settings, metrics = app[SETTINGS], app[METRICS]
    app[REDIS] = client = aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
        # No retries: a call never waits out a backoff; the breaker decides when to try again.
        retry=Retry(NoBackoff(), 0),
    )
    breaker = CircuitBreaker()
    metrics.dependency_up.labels("redis").set_function(lambda: float(breaker.available))
    prefix, observe = settings.redis_prefix, metrics.observe_cache
    app[SNAPSHOTS] = snapshots = LayeredCache(client, prefix, observe, breaker=breaker)
    app[CONFIGS] = configs = LayeredCache(
        client, prefix, observe, l1_size=CONFIG_L1_SIZE, breaker=breaker
    )
    app[RESOLVER] = Resolver(app[POOL], snapshots, app[GUARD])
    app[CLAIMS] = CallClaims(client, prefix, breaker)
    yield
    await snapshots.close()
    await configs.close()
    await client.aclose()


async def _change_feed(app: web.Application) -> AsyncIterator[None]:
    invalidation = CacheInvalidation(
        app[SNAPSHOTS], app[TOKENS], app[KNOWN], app[METRICS], app[RESOLVER].warm
    )
    feed = ChangeFeed(app[SETTINGS].feed_url, invalidation)
    app[FEED] = feed
    task = asyncio.create_task(feed.run())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(feed.connected.wait(), FEED_STARTUP_WAIT_S)
    yield
    await cancel_and_wait(task)


async def _spool(app: web.Application) -> AsyncIterator[None]:
    app[SPOOL] = spool = Spool(app[SETTINGS].spool_dir)
    # Read at each scrape: a glob and a stat per segment, and the directory is empty normally.
    app[METRICS].spool_pending.set_function(spool.pending_bytes)
    yield
    spool.close()


async def _call_writer(app: web.Application) -> AsyncIterator[None]:
    app[WRITER] = writer = CallWriter(
        app[POOL],
        app[SPOOL],
        app[GUARD],
        app[METRICS],
        app[CLAIMS],
        writers=app[SETTINGS].call_writers,
        known=app[KNOWN],
    )
    # A previous run's spooled calls: their provider retries get the answer they got then.
    writer.index(await asyncio.to_thread(app[SPOOL].open))
    task = asyncio.create_task(writer.run())
    yield
    await cancel_and_wait(task)


async def _spool_flusher(app: web.Application) -> AsyncIterator[None]:
    writer = app[WRITER]
    task = asyncio.create_task(writer.replay_forever())
    yield
    await cancel_and_wait(task)
    # In-flight webhooks have finished: whatever they spooled goes to Postgres now if it can.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(writer.try_replay(), SPOOL_SHUTDOWN_REPLAY_S)


async def _telnyx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with aiohttp.ClientSession() as session:
        app[TELNYX] = api = TelnyxApi(
            session, settings.telnyx_api_base, settings.telnyx_api_key, app[METRICS]
        )
        yield
        await api.drain()


def _warn_unconfigured(settings: Settings) -> None:
    secrets = {
        "twilio": settings.twilio_auth_token,
        "telnyx": settings.telnyx_public_key,
        "generic": settings.generic_secret,
    }
    for provider, secret in secrets.items():
        if not secret:
            log.warning(
                "webhooks_not_configured",
                provider=provider,
                set_variable=WEBHOOK_SECRET_VARIABLES[provider],
                effect="its webhooks are refused with 403",
            )


def create_app(settings: Settings) -> web.Application:
    """The router: webhooks, runtime lookups and operations endpoints."""
    _warn_unconfigured(settings)
    app = web.Application(middlewares=[error_middleware], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[METRICS] = RouterMetrics()
    app[EXPOSITION] = app[METRICS].exposition
    app[FORGET_IDLE_SERIES] = app[METRICS].forget_idle_series
    app[FALLBACK] = parse_fallback(settings.fallback)
    app[STREAM_URL] = stream_url = check_stream_url(settings.media_stream_url)
    app[STREAM_TWIML] = StreamTwiml(stream_url)
    app[ROUTED_LOG] = Sampler(ROUTED_LOG_INTERVAL_S)
    app[TOKENS] = TokenCache()
    app[KNOWN] = Known()
    app.cleanup_ctx.extend(
        [
            _postgres,
            token_usage,
            _redis,
            _change_feed,
            _spool,
            _call_writer,
            _spool_flusher,
            forget_idle_series,
            _telnyx,
        ]
    )
    setup_routes(app)
    return app

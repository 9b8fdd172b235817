"""The admin application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from admin import rollouts
from admin.metrics import METRICS, AdminMetrics
from admin.routes import setup_routes
from httpkit.auth import token_usage
from httpkit.errors import error_middleware
from httpkit.guards import reject_nul_in_url
from httpkit.keys import FORGET_IDLE_SERIES, POOL, SETTINGS
from httpkit.metrics_fanin import EXPOSITION
from httpkit.tasks import cancel_and_wait, forget_idle_series
from store import partitions, rollups
from store.db import close_pool, create_pool
from store.settings import Settings
from store.tokens import ensure_token

# Generous for a 100 KB prompt and a full tool catalogue; a 50 MB upload is refused with 413.
MAX_BODY_BYTES = 2 * 1024 * 1024
BOOTSTRAP_PRINCIPAL = "bootstrap"
# Seconds a stopping worker lets requests in flight finish (an analytics query may take a few).
SHUTDOWN_TIMEOUT_S = 10.0


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await create_pool(settings.database_url)
    if settings.bootstrap_token:
        await ensure_token(pool, BOOTSTRAP_PRINCIPAL, "admin", settings.bootstrap_token)
    app[POOL] = pool
    yield
    await close_pool(pool)


async def _rollup_compactor(app: web.Application) -> AsyncIterator[None]:
    """Folds the calls recorded since, and the deltas their updates left, into the rollups
    every AGENTVER_ROLLUP_COMPACT_S seconds (store/rollups.py); with several admin instances,
    one compacts at a time and the others skip."""
    interval = app[SETTINGS].rollup_compact_s
    if interval <= 0:
        yield
        return
    counted = app[METRICS].count_compaction
    task = asyncio.create_task(rollups.compact_forever(app[POOL], interval, counted))
    yield
    await cancel_and_wait(task)


async def _call_partitions(app: web.Application) -> AsyncIterator[None]:
    """Keeps the monthly partitions of `calls` ready, drops the expired ones and keeps
    `call_endings` to the endings still waiting (store/partitions.py); with several admin
    instances, one maintains the partitions at a time (settling endings twice is harmless)."""
    task = asyncio.create_task(
        partitions.maintain_forever(app[POOL], app[SETTINGS].call_retention_days)
    )
    yield
    await cancel_and_wait(task)


def create_app(settings: Settings) -> web.Application:
    """The admin API, its Postgres pool opened and closed with the app."""
    app = web.Application(
        middlewares=[error_middleware, reject_nul_in_url], client_max_size=MAX_BODY_BYTES
    )
    app[SETTINGS] = settings
    app[METRICS] = AdminMetrics()
    app[EXPOSITION] = app[METRICS].exposition
    app[FORGET_IDLE_SERIES] = app[METRICS].forget_idle_series
    app.cleanup_ctx.extend(
        [
            _postgres,
            token_usage,
            _rollup_compactor,
            _call_partitions,
            rollouts.schedule,
            forget_idle_series,
        ]
    )
    setup_routes(app)
    return app

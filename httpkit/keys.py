"""Typed keys for what both services keep on the application and on each request."""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from aiohttp import web

from httpkit.token_cache import TokenCache
from httpkit.token_usage import TokenUsage
from store.db import PostgresGuard
from store.settings import Settings
from store.tokens import Principal

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
PRINCIPAL = web.RequestKey("principal", Principal)
# Optional: a service that sets it (the router) authenticates repeat tokens without Postgres,
# and asks Postgres about the others through its GUARD (one breaker for all of its work).
TOKENS = web.AppKey("token_cache", TokenCache)
GUARD = web.AppKey("postgres_guard", PostgresGuard)
# Optional: when set, each authenticated request marks its token's last use (written in batches).
USAGE = web.AppKey("token_usage", TokenUsage)
# Optional: when set, called every AGENTVER_METRIC_SERIES_IDLE_S to drop the metric series
# labelled by agent version that counted nothing since the call before (httpkit/tasks.py).
FORGET_IDLE_SERIES = web.AppKey[Callable[[], None]]("forget_idle_series")

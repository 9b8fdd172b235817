"""Typed keys for what both services keep on the application and on each request."""

from __future__ import annotations

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

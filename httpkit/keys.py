"""Typed keys for what both services keep on the application and on each request."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from store.settings import Settings
from store.tokens import Principal

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
PRINCIPAL = web.RequestKey("principal", Principal)

"""Typed keys for what the router keeps on its application (shared ones: httpkit/keys.py)."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiohttp import web

from router.claims import CallClaims
from router.metrics import RouterMetrics
from router.providers import FallbackAction, StreamTwiml
from router.recorder import CallWriter
from router.resolver import Resolver
from router.spool import Spool
from router.telnyx import TelnyxApi
from store.cache import LayeredCache
from store.calls import Known
from store.feed import ChangeFeed
from store.logs import Sampler

METRICS = web.AppKey("metrics", RouterMetrics)
FALLBACK = web.AppKey("fallback", FallbackAction)
STREAM_URL = web.AppKey("stream_url", str)
STREAM_TWIML = web.AppKey("stream_twiml", StreamTwiml)
ROUTED_LOG = web.AppKey("routed_log", Sampler)
REDIS = web.AppKey("redis", aioredis.Redis)
SNAPSHOTS = web.AppKey("snapshot_cache", LayeredCache)
CONFIGS = web.AppKey("config_cache", LayeredCache)
RESOLVER = web.AppKey("resolver", Resolver)
FEED = web.AppKey("change_feed", ChangeFeed)
CLAIMS = web.AppKey("call_claims", CallClaims)
WRITER = web.AppKey("call_writer", CallWriter)
KNOWN = web.AppKey("known_pairs", Known)
SPOOL = web.AppKey("spool", Spool)
TELNYX = web.AppKey("telnyx", TelnyxApi)

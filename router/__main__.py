"""`python -m router` serves the call-routing worker on AGENTVER_ROUTER_PORT."""

from __future__ import annotations

import gc
import sys

import uvloop
from aiohttp import web

from router.app import SHUTDOWN_TIMEOUT_S, create_app
from store.logs import configure_logging
from store.settings import Settings

# A worker holds hundreds of thousands of long-lived cache objects; at the default thresholds
# (700, 10, 10) full collections re-walk them often enough to stall calls for 100+ ms (open-loop
# p99 at 100,000 channels: 268 ms, 78 ms with the collector off). Young collections stay frequent
# and cheap; full ones become rare. The warm-up also freezes what it loaded (router/resolve.py).
GC_THRESHOLDS = (10_000, 50, 1_000)


def main() -> int:
    settings = Settings.from_env()
    configure_logging()
    gc.set_threshold(*GC_THRESHOLDS)
    # SIGTERM: stop accepting, let in-flight webhooks finish (at most SHUTDOWN_TIMEOUT_S), then
    # close resources (the spool flusher replays what it can). reuse_port lets a new worker bind
    # the port beside the old one, so a rolling restart never leaves the port closed.
    web.run_app(
        create_app(settings),
        port=settings.router_port,
        print=None,
        reuse_port=True,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        loop=uvloop.new_event_loop(),  # a third less CPU per webhook than asyncio's own loop
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

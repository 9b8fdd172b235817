"""`python -m router` serves the call-routing worker on AGENTVER_ROUTER_PORT."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys

import uvloop
from aiohttp import web

from router.app import SHUTDOWN_TIMEOUT_S, create_app
from store.logs import configure_logging
from store.settings import Settings

# A worker holds hundreds of thousands of long-lived cache objects; at the default thresholds
# (700, 10, 10) full collections re-walk them often enough to stall calls for 100+ ms (open-loop
# p99 at 100,000 channels: 268 ms, 78 ms with the collector off). Young collections stay frequent
# and cheap; full ones become rare. The warm-up also freezes what it loaded (router/resolver.py).
GC_THRESHOLDS = (10_000, 50, 1_000)
# Seconds between no longer accepting and closing connections that carry no request yet: a
# connection accepted just before the listener closed has its request on the way, and closing
# it as idle would drop a call. Loopback and LAN requests arrive well within this.
ACCEPT_GRACE_S = 0.5


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop without dropping a webhook.

    reuse_port lets a new worker bind the port beside the old one, so a rolling restart never
    leaves the port closed. On a signal: stop accepting (new connections go to the siblings),
    give just-accepted connections ACCEPT_GRACE_S to deliver their request, let in-flight
    webhooks finish (at most SHUTDOWN_TIMEOUT_S), then close resources (the spool flusher
    replays what it can).
    """
    runner = web.AppRunner(
        create_app(settings), handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    site = web.TCPSite(runner, port=settings.router_port, reuse_port=True)
    await site.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    try:
        await stopping.wait()
        await site.stop()
        await asyncio.sleep(ACCEPT_GRACE_S)
    finally:
        await runner.cleanup()


def main() -> int:
    settings = Settings.from_env()
    configure_logging()
    gc.set_threshold(*GC_THRESHOLDS)
    uvloop.run(serve(settings))  # a third less CPU per webhook than asyncio's own loop
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m router` serves the call-routing worker on AGENTVER_ROUTER_PORT."""

from __future__ import annotations

import sys

import uvloop
from aiohttp import web

from router.app import SHUTDOWN_TIMEOUT_S, create_app
from store.logs import configure_logging
from store.settings import Settings


def main() -> int:
    settings = Settings.from_env()
    configure_logging()
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

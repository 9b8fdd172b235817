"""`python -m router` serves the call-routing worker on AGENTVER_ROUTER_PORT."""

from __future__ import annotations

import sys

from aiohttp import web

from router.app import create_app
from store.logs import configure_logging
from store.settings import Settings


def main() -> int:
    settings = Settings.from_env()
    configure_logging()
    web.run_app(create_app(settings), port=settings.router_port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

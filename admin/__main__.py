"""`python -m admin` serves the admin API; `python -m admin token create|list|revoke` manages
tokens; `python -m admin seed` loads the demo data."""

from __future__ import annotations

import argparse
import asyncio
import sys

from admin.app import SHUTDOWN_TIMEOUT_S, create_app
from admin.seed import report, seed
from admin.token_cli import add_token_commands, run_token_command
from httpkit import serve
from store.db import with_pool
from store.logs import configure_logging
from store.migrate import migrate
from store.settings import Settings


async def _seed(settings: Settings) -> str:
    # The demo is often the first thing run against a new database.
    await migrate(settings.database_url)
    result = await with_pool(settings.database_url, seed)
    return report(result, f"http://127.0.0.1:{settings.admin_port}")


def main(argv: list[str] | None = None) -> int:
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m admin",
        description="Serve the admin API and console, or run one of the commands below. "
        "Configured by environment variables (README, Configuration); options override them.",
    )
    serve.add_serve_arguments(parser, settings.host, settings.admin_port, "AGENTVER_ADMIN_PORT", 1)
    sub = parser.add_subparsers(dest="command")
    add_token_commands(sub)
    sub.add_parser("seed", help="load the demo agent and print a demo admin token")
    args = parser.parse_args(argv)
    configure_logging()
    if args.command == "token":
        return run_token_command(args, settings)
    if args.command == "seed":
        print(asyncio.run(_seed(settings)))
        return 0
    return serve.run(
        "admin",
        lambda: create_app(settings),
        serve.serve_options(args),
        shutdown_timeout_s=SHUTDOWN_TIMEOUT_S,
    )


if __name__ == "__main__":
    sys.exit(main())

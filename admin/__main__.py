"""`python -m admin` serves the admin API; `python -m admin token create` makes a token;
`python -m admin seed` loads the demo data."""

from __future__ import annotations

import argparse
import asyncio
import sys

from aiohttp import web

from admin.app import create_app
from store.db import create_pool
from store.logs import configure_logging
from store.settings import Settings
from store.tokens import ROLES, create_token


async def _create_token(settings: Settings, name: str, role: str) -> str:
    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        return await create_token(pool, name, role)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m admin")
    sub = parser.add_subparsers(dest="command")
    token = sub.add_parser("token", help="manage API tokens").add_subparsers(
        dest="action", required=True
    )
    create = token.add_parser("create", help="create a token and print it once")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=ROLES)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging()
    if args.command == "token":
        print(asyncio.run(_create_token(settings, args.name, args.role)))
        return 0
    web.run_app(create_app(settings), port=settings.admin_port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())

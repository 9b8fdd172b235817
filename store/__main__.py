"""`python -m store migrate` applies the migrations; `python -m store services -- CMD` runs CMD
with DATABASE_URL and REDIS_URL pointing at real servers, embedded ones started when needed."""

from __future__ import annotations

import argparse
import asyncio
import sys

from store.migrate import migrate
from store.services import run_with_services
from store.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m store")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending migrations (idempotent)")
    services = sub.add_parser("services", help="run a command with Postgres and Redis available")
    services.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "migrate":
        applied = asyncio.run(migrate(Settings.from_env().database_url))
        print(f"migrations applied: {applied or 'none pending'}")
        return 0
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    return run_with_services(cmd)


if __name__ == "__main__":
    sys.exit(main())

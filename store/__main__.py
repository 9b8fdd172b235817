"""`python -m store migrate` applies the migrations."""

from __future__ import annotations

import argparse
import asyncio
import sys

from store.migrate import migrate
from store.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m store")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending migrations (idempotent)")
    parser.parse_args(argv)
    applied = asyncio.run(migrate(Settings.from_env().database_url))
    print(f"migrations applied: {applied or 'none pending'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m store migrate` applies the migrations; `python -m store rollups backfill` builds
the call rollups from the calls, `python -m store rollups compact` folds their deltas and the
calls recorded since."""

from __future__ import annotations

import argparse
import asyncio
import sys

from store import rollups
from store.db import create_pool
from store.migrate import migrate
from store.settings import Settings


async def _compact(database_url: str) -> int:
    pool = await create_pool(database_url)
    try:
        return await rollups.compact(pool)
    finally:
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m store")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply pending migrations (idempotent)")
    rollup = sub.add_parser("rollups", help="the call rollups behind analytics")
    rollup.add_argument(
        "action",
        choices=("backfill", "compact"),
        help="backfill: rebuild every hour that has calls from the calls (idempotent, safe "
        "while calls are recorded); compact: fold pending deltas and calls",
    )
    args = parser.parse_args(argv)
    url = Settings.from_env().database_url
    if args.command == "migrate":
        applied = asyncio.run(migrate(url))
        print(f"migrations applied: {applied or 'none pending'}")
    elif args.action == "backfill":
        print(f"rollups rebuilt for {asyncio.run(rollups.backfill(url))} hours")
    else:
        print(f"rollup deltas and calls folded: {asyncio.run(_compact(url))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

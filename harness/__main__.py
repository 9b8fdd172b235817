"""`python -m harness services -- CMD` runs CMD with DATABASE_URL and REDIS_URL pointing at real
servers, embedded ones started when needed (what `make run`, `make test` and `make bench` use)."""

from __future__ import annotations

import argparse
import sys

from harness.services import run_with_services


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness")
    sub = parser.add_subparsers(dest="command", required=True)
    services = sub.add_parser("services", help="run a command with Postgres and Redis available")
    services.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    return run_with_services(cmd)


if __name__ == "__main__":
    sys.exit(main())

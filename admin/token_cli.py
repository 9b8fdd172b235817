"""`python -m admin token create|list|revoke`: the token commands, self-contained so that the
service's own command line can grow beside them."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from dataclasses import asdict
from typing import Any

import asyncpg

from httpkit.json import dumps
from store import tokens
from store.db import with_pool
from store.errors import StoreError
from store.settings import Settings

CLI_ACTOR = "cli"
_DURATION = re.compile(r"([0-9]{1,10})([smhd]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(raw: str) -> int:
    """`3600`, `90s`, `15m`, `12h` or `30d` as seconds (argparse type)."""
    match = _DURATION.fullmatch(raw.strip())
    seconds = int(match[1]) * _SECONDS[match[2]] if match else 0
    if not 1 <= seconds <= tokens.MAX_EXPIRES_IN_S:
        raise argparse.ArgumentTypeError(
            f"{raw!r}: give seconds, or a number with s, m, h or d (e.g. 30d), "
            f"at most {tokens.MAX_EXPIRES_IN_S // 86400} days"
        )
    return seconds


def add_token_commands(sub: Any) -> None:
    """Add `token create|list|revoke` to the `python -m admin` subcommands."""
    token = sub.add_parser("token", help="manage API tokens").add_subparsers(
        dest="action", required=True
    )
    create = token.add_parser("create", help="create a token and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=tokens.ROLES)
    create.add_argument(
        "--expires-in", type=duration, help="e.g. 3600, 12h or 30d; default: never expires"
    )
    create.add_argument(
        "--scope",
        action="append",
        metavar="AGENT_ID",
        help="limit the token to this agent (repeat for several); default: every agent",
    )
    create.add_argument("--json", action="store_true", help="print the token as JSON")
    listing = token.add_parser("list", help="list tokens (never their secrets)")
    listing.add_argument("--json", action="store_true", help="print JSON lines")
    revoke = token.add_parser("revoke", help="revoke a token for good")
    revoke.add_argument("id", type=int, help="the token's id, as `token list` shows it")


def _row(token: tokens.Token) -> str:
    def when(value: Any) -> str:
        return value.isoformat(timespec="seconds") if value else "-"

    scopes = ",".join(token.scopes) if token.scopes else "*"
    return "\t".join(
        [
            str(token.id),
            token.name,
            token.role,
            scopes,
            when(token.created_at),
            when(token.expires_at),
            when(token.last_used_at),
            when(token.revoked_at),
        ]
    )


async def _list(pool: asyncpg.Pool, as_json: bool) -> list[str]:
    lines = [] if as_json else ["id\tname\trole\tscopes\tcreated\texpires\tlast used\trevoked"]
    cursor: str | None = None
    while True:
        page, cursor = await tokens.list_tokens(pool, limit=1000, cursor=cursor)
        lines += [dumps(asdict(t)) if as_json else _row(t) for t in page]
        if cursor is None:
            return lines


async def _run(args: argparse.Namespace, pool: asyncpg.Pool) -> str:
    if args.action == "create":
        secret, token = await tokens.issue_token(
            pool,
            args.name,
            args.role,
            expires_in_s=args.expires_in,
            scopes=args.scope,
            actor=CLI_ACTOR,
        )
        return dumps({**asdict(token), "token": secret}) if args.json else secret
    if args.action == "list":
        return "\n".join(await _list(pool, args.json))
    return _row(await tokens.revoke_token(pool, args.id, CLI_ACTOR))


def run_token_command(args: argparse.Namespace, settings: Settings) -> int:
    """Run a `token` subcommand: its output on stdout, a refusal on stderr with status 1."""
    try:
        print(asyncio.run(with_pool(settings.database_url, lambda pool: _run(args, pool))))
    except StoreError as exc:  # an unknown scope or id, a token revoked already
        details = f": {json.dumps(exc.details)}" if exc.details else ""
        print(f"error: {exc.message}{details}", file=sys.stderr)
        return 1
    return 0

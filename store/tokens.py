"""Admin API tokens: stored as SHA-256 digests, shown in clear once at creation; optionally
expiring, limited to some agents (scopes), revocable, with a last-used time."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, get_args

import asyncpg

from store import audit
from store.errors import Conflict, InvalidConfig, NotFound, StoreError
from store.pagination import decode_cursor, page

# Lowest first; `runtime` is the voice agent's own token: call lookups and analysis only.
Role = Literal["runtime", "viewer", "editor", "publisher", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
TOKEN_PREFIX = "agv_"
TOKEN_BYTES = 32
# Seconds a new token may live at most: ten years, beyond which an expiry is a typo, and which
# keeps every expiry a timestamp Postgres can hold.
MAX_EXPIRES_IN_S = 10 * 365 * 24 * 3600
# Agents a token may be limited to: a team's agents, not a catalogue.
MAX_SCOPES = 100

INSERT_TOKEN = """
INSERT INTO api_tokens (name, role, token_hash, expires_at, scopes) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (token_hash) DO NOTHING
RETURNING id, name, role, created_at, expires_at, revoked_at, last_used_at, scopes
"""
SELECT_PRINCIPAL = """
SELECT id, name, role, scopes, expires_at FROM api_tokens
WHERE token_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
"""
LIST_TOKENS = """
SELECT id, name, role, created_at, expires_at, revoked_at, last_used_at, scopes
FROM api_tokens
WHERE ($1::bigint IS NULL OR id < $1)
ORDER BY id DESC
LIMIT $2
"""
REVOKE_TOKEN = """
UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL
RETURNING id, name, role, created_at, expires_at, revoked_at, last_used_at, scopes
"""
SELECT_TOKEN = """
SELECT id, name, role, created_at, expires_at, revoked_at, last_used_at, scopes
FROM api_tokens WHERE id = $1
"""
# Which of the named agents exist: scopes may only name agents that do.
EXISTING_AGENTS = "SELECT id FROM agents WHERE id = ANY($1::text[])"
# One statement per flush, whatever the number of tokens used; a later time never goes back.
RECORD_LAST_USED = """
UPDATE api_tokens t SET last_used_at = u.at
FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, at)
WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)
"""


class InvalidRole(StoreError):
    code = "invalid_role"


class TokenNotFound(NotFound):
    code = "token_not_found"


class TokenRevoked(Conflict):
    code = "token_revoked"


@dataclass(frozen=True)
class Principal:
    """Who a valid token speaks for. `scopes`: the only agents it may see (None: all of them)."""

    name: str
    role: str
    id: int | None = None  # None for a principal no row stands for
    scopes: frozenset[str] | None = None
    expires_at: datetime | None = None

    def has_role(self, needed: str) -> bool:
        """True when this principal's role is at least `needed` in the ROLES order."""
        return ROLES.index(self.role) >= ROLES.index(needed)

    def sees(self, agent_ids: Iterable[str]) -> bool:
        """True when every one of `agent_ids` is within the token's scopes."""
        return self.scopes is None or all(a in self.scopes for a in agent_ids)

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC))


@dataclass(frozen=True)
class Token:
    """A token as listed: everything but its secret, which is never stored."""

    id: int
    name: str
    role: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    scopes: list[str] | None


def well_formed(secret: str) -> bool:
    """True for a non-empty printable-ASCII secret without outer spaces: the only kind a token
    can be, since headers are stripped.

    Header bytes that are not ASCII reach a server as surrogate escapes, which cannot even be
    hashed; refusing them up front also keeps the bootstrap token usable from any client.
    """
    return bool(secret) and secret.isascii() and secret.isprintable() and secret == secret.strip()


def token_digest(secret: str) -> str:
    # Tokens are 256-bit random values, so a fast unsalted hash is enough: there is nothing
    # to brute-force. Lookup by digest also means no secret is ever compared byte by byte.
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _audited(token: Token) -> dict[str, object]:
    """What the audit log keeps of a token: who it is for and what it may do."""
    expires_at = token.expires_at.isoformat() if token.expires_at else None
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role,
        "scopes": token.scopes,
        "expires_at": expires_at,
    }


def _token(row: asyncpg.Record) -> Token:
    scopes = row["scopes"]
    return Token(
        row["id"],
        row["name"],
        row["role"],
        row["created_at"],
        row["expires_at"],
        row["revoked_at"],
        row["last_used_at"],
        list(scopes) if scopes is not None else None,
    )


async def _check_scopes(pool: asyncpg.Pool, scopes: list[str]) -> None:
    """InvalidConfig naming the first scope that is no agent."""
    found = {r["id"] for r in await pool.fetch(EXISTING_AGENTS, scopes)}
    for i, agent_id in enumerate(scopes):
        if agent_id not in found:
            raise InvalidConfig(
                "the token is invalid",
                [{"path": f"scopes[{i}]", "message": f"no agent {agent_id}"}],
            )


async def issue_token(
    pool: asyncpg.Pool,
    name: str,
    role: str,
    *,
    expires_in_s: int | None = None,
    scopes: list[str] | None = None,
    actor: str | None = None,
) -> tuple[str, Token]:
    """A new token for `name` with `role`, expiring after `expires_in_s` seconds and limited to
    the agents `scopes` names if given: its secret (never stored) and the token as listed.
    Audited as `actor`'s when given."""
    if role not in ROLES:
        raise InvalidRole(f"role must be one of {', '.join(ROLES)}")
    if scopes is not None:
        await _check_scopes(pool, scopes)
    expires_at = None
    if expires_in_s is not None:
        expires_at = datetime.now(UTC) + timedelta(seconds=expires_in_s)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            INSERT_TOKEN, name, role, token_digest(secret), expires_at, scopes
        )
        assert row is not None  # a 256-bit random secret does not collide
        token = _token(row)
        if actor is not None:
            await audit.record(conn, actor, "token.create", after=_audited(token))
    return secret, token


async def create_token(pool: asyncpg.Pool, name: str, role: str) -> str:
    """A new token for `name` with `role`, unlimited: only its secret."""
    secret, _ = await issue_token(pool, name, role)
    return secret


async def ensure_token(pool: asyncpg.Pool, name: str, role: str, secret: str) -> None:
    """Make `secret` a valid token (for AGENTVER_BOOTSTRAP_TOKEN); a no-op when it is."""
    if not well_formed(secret):
        raise ValueError("a token must be printable ASCII without spaces at either end")
    await pool.execute(INSERT_TOKEN, name, role, token_digest(secret), None, None)


async def authenticate(pool: asyncpg.Pool | asyncpg.Connection, secret: str) -> Principal | None:
    """The principal of a token neither revoked nor expired, else None."""
    row = await pool.fetchrow(SELECT_PRINCIPAL, token_digest(secret))
    if row is None:
        return None
    scopes = frozenset(row["scopes"]) if row["scopes"] is not None else None
    return Principal(row["name"], row["role"], row["id"], scopes, row["expires_at"])


async def list_tokens(
    pool: asyncpg.Pool, *, limit: int, cursor: str | None = None
) -> tuple[list[Token], str | None]:
    """Every token, revoked and expired ones included, newest first; never a secret."""
    after = decode_cursor(cursor, (int,))
    rows = await pool.fetch(LIST_TOKENS, after[0] if after else None, limit + 1)
    return page([_token(r) for r in rows], limit, lambda t: [t.id])


async def revoke_token(pool: asyncpg.Pool, token_id: int, actor: str) -> Token:
    """Revoke a token for good, audited as `actor`'s; the revocation reaches every worker
    through the change feed. TokenNotFound for an unknown id, TokenRevoked when it was revoked
    already."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(REVOKE_TOKEN, token_id)
        if row is not None:
            token = _token(row)
            await audit.record(conn, actor, "token.revoke", before=_audited(token))
            return token
    existing = await pool.fetchrow(SELECT_TOKEN, token_id)
    if existing is None:
        raise TokenNotFound(f"no token {token_id}")
    raise TokenRevoked(f"token {token_id} was revoked at {existing['revoked_at'].isoformat()}")


async def record_last_used(
    pool: asyncpg.Pool, used: Mapping[int, datetime], within_s: float
) -> None:
    """Store when each token was last used, in one statement."""
    await pool.execute(RECORD_LAST_USED, list(used), list(used.values()), timeout=within_s)

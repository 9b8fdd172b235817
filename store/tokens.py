"""Admin API tokens: stored as SHA-256 digests, shown in clear once at creation."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal, get_args

import asyncpg

from store.errors import StoreError

# Lowest first; `runtime` is the voice agent's own token: call lookups and analysis only.
Role = Literal["runtime", "viewer", "editor", "publisher", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
TOKEN_PREFIX = "agv_"
TOKEN_BYTES = 32

INSERT_TOKEN = """
INSERT INTO api_tokens (name, role, token_hash) VALUES ($1, $2, $3)
ON CONFLICT (token_hash) DO NOTHING
"""
SELECT_PRINCIPAL = """
SELECT name, role FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL
"""


class InvalidRole(StoreError):
    code = "invalid_role"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    def has_role(self, needed: str) -> bool:
        """True when this principal's role is at least `needed` in the ROLES order."""
        return ROLES.index(self.role) >= ROLES.index(needed)


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


async def create_token(pool: asyncpg.Pool, name: str, role: str) -> str:
    """A new token for `name` with `role`; the returned secret is never stored."""
    if role not in ROLES:
        raise InvalidRole(f"role must be one of {', '.join(ROLES)}")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    await pool.execute(INSERT_TOKEN, name, role, token_digest(secret))
    return secret


async def ensure_token(pool: asyncpg.Pool, name: str, role: str, secret: str) -> None:
    """Make `secret` a valid token (for AGENTVER_BOOTSTRAP_TOKEN); a no-op when it is."""
    if not well_formed(secret):
        raise ValueError("a token must be printable ASCII without spaces at either end")
    await pool.execute(INSERT_TOKEN, name, role, token_digest(secret))


async def authenticate(pool: asyncpg.Pool | asyncpg.Connection, secret: str) -> Principal | None:
    row = await pool.fetchrow(SELECT_PRINCIPAL, token_digest(secret))
    return Principal(row["name"], row["role"]) if row else None

"""Bearer-token authentication and role checks."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from httpkit.errors import ApiError
from httpkit.keys import GUARD, POOL, PRINCIPAL, TOKENS
from httpkit.token_cache import TokenCache
from store.db import DatabaseUnavailable
from store.tokens import ROLES, Principal, authenticate, token_digest, well_formed

View = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _lookup(request: web.Request, secret: str) -> Principal | None:
    """The token's principal: from the application's TokenCache when it has one (the router),
    else, and on a miss, from Postgres: through the router's guard, so that while Postgres is
    out of reach a lookup is answered at once rather than after a timeout each."""
    pool, tokens = request.app[POOL], request.app.get(TOKENS)
    if tokens is None:
        return await authenticate(pool, secret)
    digest = token_digest(secret)
    principal = tokens.get(digest)
    if principal is not None:
        return principal
    try:
        principal = await request.app[GUARD].read(pool, lambda conn: authenticate(conn, secret))
    except DatabaseUnavailable:
        return _validated_before(tokens, digest)
    if principal is None:
        tokens.forget(digest)
    else:
        tokens.put(digest, principal)
    return principal


def _validated_before(tokens: TokenCache, digest: str) -> Principal:
    """While Postgres is unavailable: the principal of a token validated not long ago (see
    TOKEN_STALE_S for the trade-off); 503 for any other, as it may well be valid."""
    principal = tokens.get_stale(digest)
    if principal is None:
        raise ApiError(
            503, "unavailable", "tokens cannot be checked right now; retry in a few seconds"
        )
    return principal


async def principal_of(request: web.Request) -> Principal:
    """The token's principal; ApiError 401 when the token is missing, malformed or unknown."""
    header = request.headers.get("Authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not well_formed(secret):
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    principal = await _lookup(request, secret)
    if principal is None:
        raise ApiError(401, "unauthorized", "the token is not valid")
    return principal


def allowed(principal: Principal, roles: tuple[str, ...]) -> bool:
    """True when the principal holds one of `roles` or outranks the lowest of them.

    `runtime` (the voice agent's token) sits outside the viewer-to-admin ladder: it passes
    only where it is named.
    """
    ladder = [r for r in roles if r != "runtime"]
    return principal.role in roles or (
        bool(ladder)
        and principal.role != "runtime"
        and principal.has_role(min(ladder, key=ROLES.index))
    )


def requires(*roles: str) -> Callable[[View], View]:
    """Let a view run only for tokens `allowed` for `roles`: 401 without one, 403 below."""
    assert roles and all(r in ROLES for r in roles)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def checked(request: web.Request) -> web.StreamResponse:
            principal = await principal_of(request)
            if not allowed(principal, roles):
                raise ApiError(
                    403,
                    "forbidden",
                    f"this needs the {' or '.join(roles)} role; the token has {principal.role}",
                )
            request[PRINCIPAL] = principal
            return await view(request)

        return checked

    return decorate

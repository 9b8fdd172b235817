"""Bearer-token authentication, role checks and scopes; tokens' last-used times."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

from aiohttp import web

from httpkit.errors import ApiError
from httpkit.keys import GUARD, POOL, PRINCIPAL, TOKENS, USAGE
from httpkit.tasks import cancel_and_wait
from httpkit.token_cache import TokenCache
from httpkit.token_usage import FLUSH_INTERVAL_S, TokenUsage
from store.channels import Routing
from store.db import DatabaseUnavailable
from store.errors import AgentNotFound, CallNotFound
from store.tokens import ROLES, Principal, authenticate, token_digest, well_formed

View = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _lookup(app: web.Application, secret: str) -> Principal | None:
    """The token's principal: from the application's TokenCache when it has one (the router),
    else, and on a miss, from Postgres: through the router's guard, so that while Postgres is
    out of reach a lookup is answered at once rather than after a timeout each."""
    pool, tokens = app[POOL], app.get(TOKENS)
    if tokens is None:
        return await authenticate(pool, secret)
    digest = token_digest(secret)
    if tokens.revoked(digest):
        return None
    principal = tokens.get(digest)
    if principal is not None:
        return principal
    try:
        principal = await app[GUARD].read(pool, lambda conn: authenticate(conn, secret))
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


async def principal_of(app: web.Application, headers: Mapping[str, str]) -> Principal:
    """The token's principal; ApiError 401 when the token is missing, malformed, unknown,
    revoked or expired."""
    header = headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not well_formed(secret):
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>")
    principal = await _lookup(app, secret)
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


async def authorize(
    app: web.Application, headers: Mapping[str, str], roles: tuple[str, ...]
) -> Principal:
    """The principal of a token `allowed` for `roles`, its use marked: 401 without one, 403
    below."""
    principal = await principal_of(app, headers)
    if not allowed(principal, roles):
        raise ApiError(
            403,
            "forbidden",
            f"this needs the {' or '.join(roles)} role; the token has {principal.role}",
        )
    usage = app.get(USAGE)
    if usage is not None and principal.id is not None:
        usage.mark(principal.id)
    return principal


def requires(*roles: str) -> Callable[[View], View]:
    """Let a view run only for tokens `allowed` for `roles` (`authorize`)."""
    assert roles and all(r in ROLES for r in roles)

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def checked(request: web.Request) -> web.StreamResponse:
            request[PRINCIPAL] = await authorize(request.app, request.headers, roles)
            return await view(request)

        return checked

    return decorate


# --- scopes ----------------------------------------------------------------------------------


def sees(request: web.Request, agent_ids: Iterable[str]) -> bool:
    """True when the request's token may see every one of `agent_ids`."""
    return request[PRINCIPAL].sees(agent_ids)


def scopes_of(request: web.Request) -> list[str] | None:
    """The agents the request's token is limited to, for a listing's filter (None: all)."""
    scopes = request[PRINCIPAL].scopes
    return sorted(scopes) if scopes is not None else None


def visible_agent(request: web.Request, agent_id: str) -> str:
    """`agent_id`, when the request's token may see it; else the 404 of an unknown agent."""
    if not sees(request, [agent_id]):
        raise AgentNotFound(f"no agent {agent_id}")
    return agent_id


def call_in_scope(principal: Principal, call_id: str, agent_id: str) -> None:
    """The 404 of an unknown call for a call served by an agent the token may not see."""
    if not principal.sees([agent_id]):
        raise CallNotFound(f"no call {call_id}")


def visible_routing(request: web.Request, routing: Routing | None) -> Routing | None:
    """A channel's routing as the request's token may know it: not at all (None) when it
    routes to any agent outside its scopes."""
    if routing is None or not sees(request, (v.agent_id for v in routing.variants)):
        return None
    return routing


def unscoped(request: web.Request, what: str) -> None:
    """403 for a token limited to some agents, where `what` reaches beyond any agent."""
    if request[PRINCIPAL].scopes is not None:
        raise ApiError(403, "forbidden", f"a token limited to some agents cannot {what}")


# --- last-used times -------------------------------------------------------------------------


async def token_usage(app: web.Application) -> AsyncIterator[None]:
    """A cleanup_ctx generator: the application's TokenUsage, flushed every FLUSH_INTERVAL_S and
    once more on the way out. Append it after the one that opens the Postgres pool."""
    app[USAGE] = usage = TokenUsage()

    async def flush_forever() -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            await usage.flush(app[POOL])

    task = asyncio.create_task(flush_forever())
    yield
    await cancel_and_wait(task)
    await usage.flush(app[POOL])

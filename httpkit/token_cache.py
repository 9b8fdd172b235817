"""A short-lived per-worker cache of token principals, so authenticated reads on a hot path
need no Postgres query per request, and keep working through a Postgres outage; and the
revocations the change feed announced, remembered so that no outage revives a revoked token."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from store.tokens import Principal

# Seconds a worker reuses a token's principal without asking Postgres. A revocation reaches the
# worker at once through the change feed; should the feed have missed it (it was down), the
# token is refused at most this long after the revocation.
TOKEN_TTL_S = 5.0
# Seconds after its last validation that a worker still accepts a token while Postgres cannot be
# asked (stale-if-error), so voice agents keep fetching their configs through a failover or a
# restart. Only for a token validated while the change feed was listening (see `listening`):
# every revocation committed before the outage has then reached this worker and is refused. The
# security cost: a token revoked during the outage cannot be, so it keeps working on this worker
# until Postgres answers again, for at most this long after that validation. Ten minutes
# outlasts a restart or failover; a longer outage fails closed (503) rather than trusting the
# token indefinitely.
TOKEN_STALE_S = 600.0
# Tokens per worker: a handful of voice-agent and console tokens are in use at a time; the bound
# only keeps a flood of distinct valid tokens from growing the cache without limit. Revoked
# digests are bounded alike.
TOKEN_CACHE_SIZE = 1024


class TokenCache:
    """Principals of recently validated tokens, by token digest (bounded LRU): fresh for `ttl_s`
    seconds after a validation, usable as a fallback (`get_stale`) for `stale_s` seconds.

    Only known tokens are kept: a token created a moment ago works at once, and an unknown one
    is asked about every time (as it always was). An expired principal is never returned.
    """

    def __init__(
        self,
        ttl_s: float = TOKEN_TTL_S,
        size: int = TOKEN_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
        stale_s: float = TOKEN_STALE_S,
    ) -> None:
        self._ttl_s = ttl_s
        self._stale_s = stale_s
        self._size = size
        self._clock = clock
        # digest → (when it was last validated, its principal)
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()
        # Tokens the feed announced revoked (revocation is final), by id and by the digests
        # seen for them, oldest first.
        self._revoked_ids: OrderedDict[int, None] = OrderedDict()
        self._revoked: OrderedDict[str, None] = OrderedDict()
        # When the change feed last began listening; None before it ever did.
        self._listening_since: float | None = None

    def _within(self, digest: str, age_s: float) -> tuple[float, Principal] | None:
        """The entry of `digest` if validated less than `age_s` seconds ago and not expired; an
        entry past the stale bound or its expiry is dropped, as nothing may use it any more."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        age = self._clock() - entry[0]
        if age >= self._stale_s or entry[1].expired():
            del self._entries[digest]
            return None
        if age >= age_s:
            return None
        self._entries.move_to_end(digest)
        return entry

    def get(self, digest: str) -> Principal | None:
        """The principal cached for `digest`, or None when absent or older than the TTL."""
        entry = self._within(digest, self._ttl_s)
        return entry[1] if entry else None

    def get_stale(self, digest: str) -> Principal | None:
        """The principal cached for `digest` even past the TTL, within the stale bound: only for
        when Postgres cannot say whether the token is still valid, and only if validated while
        the feed listened, so that no revocation before the outage can have been missed."""
        entry = self._within(digest, self._stale_s)
        since = self._listening_since
        if entry is None or since is None or entry[0] < since:
            return None
        return entry[1]

    def revoked(self, digest: str) -> bool:
        """True for a token the feed announced revoked: refused without asking anyone."""
        return digest in self._revoked

    def put(self, digest: str, principal: Principal) -> None:
        """Remember a principal Postgres has just validated (unless a revocation overtook the
        validation)."""
        if principal.id in self._revoked_ids:
            self._remember(self._revoked, digest)
            return
        self._entries[digest] = (self._clock(), principal)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, digest: str) -> None:
        """Drop a token Postgres no longer knows, so no outage can revive it."""
        self._entries.pop(digest, None)

    def revoke(self, token_id: int) -> None:
        """The feed announced `token_id` revoked: drop it, and remember its digest for good."""
        self._remember(self._revoked_ids, token_id)
        for digest in [d for d, (_, p) in self._entries.items() if p.id == token_id]:
            del self._entries[digest]
            self._remember(self._revoked, digest)

    def _remember(self, revoked: OrderedDict[Any, None], key: Any) -> None:
        revoked[key] = None
        while len(revoked) > self._size:
            revoked.popitem(last=False)

    def listening(self) -> None:
        """The change feed listens again (a resync): from now on no revocation is missed.
        Tokens validated before may have been revoked while it was not listening, so they are
        accepted stale no more (they are still fresh for their TTL)."""
        self._listening_since = self._clock()

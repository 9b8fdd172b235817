"""A short-lived per-worker cache of token principals, so authenticated reads on a hot path
need no Postgres query per request, and keep working through a Postgres outage."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from store.tokens import Principal

# Seconds a worker reuses a token's principal without asking Postgres. Tokens are never deleted
# or revoked through the API today; should a revoke API come, a revoked token would keep working
# on a worker for at most this long (or announce revocations on the change feed instead).
TOKEN_TTL_S = 5.0
# Seconds after its last validation that a worker still accepts a token while Postgres cannot be
# asked (stale-if-error), so voice agents keep fetching their configs through a failover or a
# restart. The security cost: a token revoked during an outage (or after this worker last
# validated it) keeps working on this worker until Postgres answers again, for at most this
# long after that validation. Ten minutes outlasts a restart or failover; a longer outage fails
# closed (503) rather than trusting the token indefinitely.
TOKEN_STALE_S = 600.0
# Tokens per worker: a handful of voice-agent and console tokens are in use at a time; the bound
# only keeps a flood of distinct valid tokens from growing the cache without limit.
TOKEN_CACHE_SIZE = 1024


class TokenCache:
    """Principals of recently validated tokens, by token digest (bounded LRU): fresh for `ttl_s`
    seconds after a validation, usable as a fallback (`get_stale`) for `stale_s` seconds.

    Only known tokens are kept: a token created a moment ago works at once, and an unknown one
    is asked about every time (as it always was).
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

    def _within(self, digest: str, age_s: float) -> Principal | None:
        """The principal of `digest` if validated less than `age_s` seconds ago; an entry past
        the stale bound is dropped, as nothing may use it any more."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        age = self._clock() - entry[0]
        if age >= self._stale_s:
            del self._entries[digest]
            return None
        if age >= age_s:
            return None
        self._entries.move_to_end(digest)
        return entry[1]

    def get(self, digest: str) -> Principal | None:
        """The principal cached for `digest`, or None when absent or older than the TTL."""
        return self._within(digest, self._ttl_s)

    def get_stale(self, digest: str) -> Principal | None:
        """The principal cached for `digest` even past the TTL, within the stale bound: only for
        when Postgres cannot say whether the token is still valid."""
        return self._within(digest, self._stale_s)

    def put(self, digest: str, principal: Principal) -> None:
        """Remember a principal Postgres has just validated."""
        self._entries[digest] = (self._clock(), principal)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def forget(self, digest: str) -> None:
        """Drop a token Postgres no longer knows, so no outage can revive it."""
        self._entries.pop(digest, None)

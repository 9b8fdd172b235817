"""A short-lived per-worker cache of token principals, so authenticated reads on a hot path
need no Postgres query per request."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from store.tokens import Principal

# Seconds a worker reuses a token's principal without asking Postgres. Tokens are never deleted
# or revoked through the API today; should a revoke API come, a revoked token would keep working
# on a worker for at most this long (or announce revocations on the change feed instead).
TOKEN_TTL_S = 5.0
# Tokens per worker: a handful of voice-agent and console tokens are in use at a time; the bound
# only keeps a flood of distinct valid tokens from growing the cache without limit.
TOKEN_CACHE_SIZE = 1024


class TokenCache:
    """Principals of recently seen tokens, by token digest, for `ttl_s` seconds (bounded LRU).

    Only known tokens are kept: a token created a moment ago works at once, and an unknown one
    is asked about every time (as it always was).
    """

    def __init__(
        self,
        ttl_s: float = TOKEN_TTL_S,
        size: int = TOKEN_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._size = size
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, digest: str) -> Principal | None:
        """The principal cached for `digest`, or None when absent or expired."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        self._entries[digest] = (self._clock() + self._ttl_s, principal)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

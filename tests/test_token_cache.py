"""The router's per-worker token cache: principals reused for a few seconds, then asked again;
while Postgres cannot be asked, still served for a bounded while (stale-if-error)."""

from __future__ import annotations

from httpkit.token_cache import TokenCache
from store.tokens import Principal

VOICE = Principal("voice-agent", "runtime")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_principal_is_reused_until_its_ttl_runs_out() -> None:
    clock = Clock()
    tokens = TokenCache(ttl_s=5.0, clock=clock)
    tokens.put("digest", VOICE)

    clock.now += 4.9
    assert tokens.get("digest") == VOICE
    clock.now += 0.1
    assert tokens.get("digest") is None
    assert tokens.get("digest") is None  # the expired entry is gone, not revived


def test_the_least_recently_used_token_goes_first() -> None:
    tokens = TokenCache(size=2, clock=Clock())
    tokens.put("a", VOICE)
    tokens.put("b", VOICE)
    assert tokens.get("a") == VOICE  # a is now the more recent
    tokens.put("c", VOICE)

    assert [tokens.get(d) for d in ("a", "b", "c")] == [VOICE, None, VOICE]


def test_a_stale_principal_is_kept_for_outages_within_its_bound() -> None:
    clock = Clock()
    tokens = TokenCache(ttl_s=5.0, stale_s=600.0, clock=clock)
    tokens.put("digest", VOICE)

    clock.now += 5.0
    assert tokens.get("digest") is None  # past the TTL: ask Postgres
    assert tokens.get_stale("digest") == VOICE  # ...unless it cannot answer
    clock.now += 594.9
    assert tokens.get_stale("digest") == VOICE
    clock.now += 0.1
    assert tokens.get_stale("digest") is None
    tokens.put("digest", VOICE)  # validated again once Postgres is back
    assert tokens.get("digest") == VOICE


def test_a_forgotten_token_is_not_served_even_stale() -> None:
    tokens = TokenCache(clock=Clock())
    tokens.put("digest", VOICE)
    tokens.forget("digest")
    tokens.forget("never-seen")
    assert tokens.get_stale("digest") is None

"""The router's per-worker token cache: principals reused for a few seconds, then asked again;
while Postgres cannot be asked, still served for a bounded while (stale-if-error), unless the
change feed announced the token revoked or it expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from httpkit.token_cache import TokenCache
from store.tokens import Principal

VOICE = Principal("voice-agent", "runtime", id=7)


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
    tokens.listening()
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


def test_a_token_validated_before_the_feed_last_listened_is_not_served_stale() -> None:
    # A revocation committed while the feed was not listening may never have reached the worker.
    clock = Clock()
    tokens = TokenCache(ttl_s=5.0, clock=clock)
    tokens.put("before", VOICE)
    assert tokens.get_stale("before") is None  # the feed never listened
    clock.now += 1.0
    tokens.listening()
    assert tokens.get("before") == VOICE  # still fresh for its TTL
    clock.now += 5.0
    assert tokens.get_stale("before") is None
    tokens.put("after", VOICE)
    clock.now += 5.0
    assert tokens.get_stale("after") == VOICE


def test_a_revoked_token_is_dropped_and_remembered_for_good() -> None:
    clock = Clock()
    tokens = TokenCache(clock=clock)
    tokens.listening()
    other = Principal("console", "admin", id=8)
    tokens.put("voice", VOICE)
    tokens.put("console", other)

    tokens.revoke(7)
    assert tokens.revoked("voice") and not tokens.revoked("console")
    assert tokens.get("voice") is None and tokens.get_stale("voice") is None
    assert tokens.get("console") == other
    # A validation that started before the revocation and ends after it cannot revive it.
    tokens.put("voice", VOICE)
    tokens.put("voice-2", VOICE)
    assert tokens.get("voice") is None and tokens.revoked("voice-2")
    tokens.revoke(99)  # a token this worker never saw
    assert tokens.get("console") == other


def test_revocations_remembered_are_bounded() -> None:
    tokens = TokenCache(size=2, clock=Clock())
    for n in range(3):
        tokens.put(f"d{n}", Principal("t", "viewer", id=n))
        tokens.revoke(n)
    assert [tokens.revoked(f"d{n}") for n in range(3)] == [False, True, True]


def test_an_expired_token_is_never_served() -> None:
    clock = Clock()
    tokens = TokenCache(clock=clock)
    tokens.listening()
    past = Principal("ci", "viewer", id=9, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    tokens.put("expired", past)
    assert tokens.get("expired") is None and tokens.get_stale("expired") is None

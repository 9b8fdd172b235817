"""A circuit breaker: a pure state machine that lets callers stop waiting on a dead dependency.

closed: every call goes through; `failures_to_open` failures in a row open it.
open: calls are refused at once, until `reset_after_s` has passed; then one probe goes through.
half_open: that probe is in flight; its success closes the breaker, its failure reopens it.
A probe that never reports (its caller was cancelled) is replaced after `reset_after_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

# Failures in a row before a dependency counts as down: one timeout is noise, three are not.
FAILURES_TO_OPEN = 3
# Seconds between probes of a dependency that is down: a restarted Redis or Postgres is back
# in use within a second, and a dead one costs one failed probe per second, not one per call.
RESET_AFTER_S = 1.0

Clock = Callable[[], float]


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Tracks one dependency's health; callers ask `allow()` and report the outcome."""

    def __init__(
        self,
        *,
        failures_to_open: int = FAILURES_TO_OPEN,
        reset_after_s: float = RESET_AFTER_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self._failures_to_open = failures_to_open
        self._reset_after_s = reset_after_s
        self._clock = clock
        self.state = State.CLOSED
        self._failures = 0
        self._since = 0.0  # when the breaker last opened, or its probe started

    def allow(self) -> bool:
        """Whether a call may try the dependency now (a True while open starts a probe)."""
        if self.state is State.CLOSED:
            return True
        if self._clock() - self._since < self._reset_after_s:
            return False
        self.state, self._since = State.HALF_OPEN, self._clock()
        return True

    def succeeded(self) -> bool:
        """Report a call that worked; True when this closed a breaker that was not closed."""
        recovered = self.state is not State.CLOSED
        self.state, self._failures = State.CLOSED, 0
        return recovered

    def failed(self) -> None:
        """Report a call that found the dependency unavailable."""
        self._failures += 1
        if self.state is not State.CLOSED or self._failures >= self._failures_to_open:
            self.state, self._since = State.OPEN, self._clock()

    @property
    def available(self) -> bool:
        """False while the dependency is known to be down (for readiness and metrics)."""
        return self.state is State.CLOSED

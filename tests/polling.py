"""Waiting for what the services do in the background (a change reaching a router through the
change feed, spooled calls replayed): poll until it holds, within a budget, never sleep and hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# Seconds: the product's budget for a committed change to reach every router worker
# (loadtests/bench.py counts a slower change as lost). A tighter budget flakes on a loaded machine.
PROPAGATION_S = 2.0
# Seconds between two polls: in-process checks are cheap.
POLL_INTERVAL_S = 0.01


async def eventually(
    probe: Callable[[], Awaitable[T]],
    until: Callable[[T], object] = bool,
    *,
    within_s: float = PROPAGATION_S,
    interval_s: float = POLL_INTERVAL_S,
) -> T:
    """Await `probe` until `until` holds for what it returns (by default: until it is truthy);
    that value. Fails, showing the last value, after `within_s` seconds."""
    deadline = time.monotonic() + within_s
    while not until(value := await probe()):
        assert time.monotonic() < deadline, f"not met in {within_s} s; last: {value!r}"
        await asyncio.sleep(interval_s)
    return value

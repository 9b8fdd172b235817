"""The circuit breaker as a table of event sequences: each step is (time, event, expected),
event one of allow / ok / fail; `expected` is what allow() returns, or the state after."""

from __future__ import annotations

import pytest

from store.breaker import CircuitBreaker, State

CLOSED, OPEN = State.CLOSED, State.OPEN
Step = tuple[float, str, bool | State]

# Three failures in a row, from closed to open (failures_to_open=3, below).
OPENED: list[Step] = [(0, "fail", CLOSED), (0, "fail", CLOSED), (0, "fail", OPEN)]

CASES: dict[str, list[Step]] = {
    "closed lets calls through": [(0, "allow", True), (0, "ok", CLOSED), (0, "allow", True)],
    "failures below the threshold keep it closed": OPENED[:2],
    "a success resets the count": [*OPENED[:2], (0, "ok", CLOSED), (0, "fail", CLOSED)],
    "three failures in a row open it": [*OPENED, (0.5, "allow", False)],
    "after the reset time one probe goes through": [
        *OPENED,
        (1.0, "allow", True),
        (1.0, "allow", False),
        (1.0, "ok", CLOSED),
        (1.0, "allow", True),
    ],
    "a failed probe reopens it for another reset time": [
        *OPENED,
        (1.0, "allow", True),
        (1.1, "fail", OPEN),
        (1.5, "allow", False),
        (2.1, "allow", True),
    ],
    "a probe that never reports is replaced": [
        *OPENED,
        (1.0, "allow", True),
        (1.5, "allow", False),
        (2.0, "allow", True),
    ],
}


@pytest.mark.parametrize("steps", CASES.values(), ids=CASES.keys())
def test_breaker(steps: list[Step]) -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures_to_open=3, reset_after_s=1.0, clock=lambda: now[0])
    for at, event, expected in steps:
        now[0] = at
        if event == "allow":
            assert breaker.allow() is expected, (at, event)
            continue
        if event == "ok":
            breaker.succeeded()
        else:
            breaker.failed()
        assert breaker.state is expected, (at, event)


def test_succeeded_tells_a_recovery() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures_to_open=1, reset_after_s=1.0, clock=lambda: now[0])
    assert breaker.succeeded() is False
    breaker.failed()
    assert not breaker.available
    now[0] = 1.0
    assert breaker.allow()
    assert breaker.succeeded() is True and breaker.available

"""`python -m loadtests.speed DELAY_S DURATION_S OUT`: how fast each CPU of this machine ran
Python while a point was measured.

A shared host does not run a virtual CPU at one speed: on an idle machine, 20 rounds of `work`
took 16.2-18.5 ms of CPU in some seconds and 27-30 ms in others, on either CPU, flipping within
seconds; and under a point's load, where each CPU switches between the servers, Postgres and
the client, the same work costs more again (loadtests/README.md).
A point's CPU µs per call moves with both, so the bench runs this probe beside every point,
from when the load generator starts measuring (DELAY_S 0): every INTERVAL_S it pins itself to
the next CPU and times one round of `work`, for DURATION_S, about 1% of one CPU. OUT gets, per
CPU, the median and the least milliseconds of the work, and every round with its wall-clock
time (`rounds`: a point's slow seconds set beside the host's speed then).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

INTERVAL_S = 0.1
# Rounds of the work a probe times: about 1 ms at the host's fast speed.
ROUNDS = 1_000


def work(rounds: int = ROUNDS) -> None:
    """The kinds of work a webhook costs the router: formatting, partitioning, a dict, a
    digest."""
    seen: dict[str, bytes] = {}
    for n in range(rounds):
        name, _, value = f"Field{n % 25}=value+{n}".partition("=")
        seen[name] = hashlib.sha256(value.replace("+", " ").encode()).digest()


# (wall-clock seconds when it started, milliseconds of CPU the work took) of one round.
Timed = tuple[float, float]


def probe(cpus: list[int], duration_s: float) -> dict[int, list[Timed]]:
    """Each round of the work, per CPU, the CPUs taken in turn."""
    taken: dict[int, list[Timed]] = {cpu: [] for cpu in cpus}
    deadline = time.monotonic() + duration_s
    turn = 0
    while time.monotonic() < deadline:
        cpu = cpus[turn % len(cpus)]
        turn += 1
        os.sched_setaffinity(0, {cpu})
        at, started = time.time(), time.thread_time()
        work()
        taken[cpu].append((at, (time.thread_time() - started) * 1000))
        time.sleep(INTERVAL_S)
    return taken


def summary(taken: dict[int, list[Timed]]) -> dict[str, dict[str, Any]]:
    """Per CPU: the median and the least ms of the work, and its rounds."""
    return {
        str(cpu): {
            "median_ms": round(statistics.median(m for _, m in runs), 2),
            "least_ms": round(min(m for _, m in runs), 2),
            "rounds": [[round(at, 3), round(m, 3)] for at, m in runs],
        }
        for cpu, runs in taken.items()
        if runs
    }


def by_second(speeds: dict[str, dict[str, Any]], start: float, seconds: int) -> list[float | None]:
    """The median ms of the rounds of every CPU in each second from the wall-clock `start`
    (None for a second without one)."""
    found: list[list[float]] = [[] for _ in range(seconds)]
    for cpu in speeds.values():
        for at, ms in cpu["rounds"]:
            if at >= start and (second := int(at - start)) < seconds:
                found[second].append(ms)
    return [round(statistics.median(ms), 2) if ms else None for ms in found]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    delay, duration, out = float(argv[0]), float(argv[1]), Path(argv[2])
    time.sleep(delay)
    out.write_text(json.dumps(summary(probe(sorted(os.sched_getaffinity(0)), duration))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Process accounting from /proc: CPU seconds and resident memory of the processes under test,
and a description of the machine the numbers were measured on."""

from __future__ import annotations

import asyncio
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import uvloop

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of `pid` in seconds (None once the process is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; every field after it follows its ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _schedstat(pid: int, field: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[field]) / 1e9
    except OSError:
        return 0.0


def run_seconds(pid: int) -> float:
    """Time `pid` has run on a CPU, in seconds to the nanosecond (0 once the process is gone):
    cpu_seconds counts clock ticks of 10 ms, too coarse to tell components of a few µs a call
    apart over a few seconds of one backend."""
    return _schedstat(pid, 0)


def wait_seconds(pid: int) -> float:
    """Time `pid` was runnable but waiting for a CPU, in seconds (0 once the process is gone):
    what the other processes on the machine cost it in latency."""
    return _schedstat(pid, 1)


def cpu_by_pid(pids: Iterable[int]) -> dict[int, float]:
    """cpu_seconds of each of `pids` still running."""
    return {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds run between two readings (`cpu_by_pid`) by the processes running at the
    second: all of it for a process started since the first. A process gone by the second took
    its count with it, and adds nothing: subtracting the readings' sums would take its CPU
    before the first off the interval (a pooled connection Postgres closed mid-point read -553
    µs a call)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (0 once the process is gone)."""
    try:
        resident = Path(f"/proc/{pid}/statm").read_text().split()[1]
    except OSError:
        return 0
    return int(resident) * PAGE_BYTES


def machine() -> dict[str, Any]:
    """What the benchmark ran on: CPU model and count, memory, kernel, Python, load."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }


def new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop, as the router runs on, so the ratios compare designs, not loops."""
    return uvloop.new_event_loop()

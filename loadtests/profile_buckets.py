"""`python -m loadtests.profile_buckets FILE [US_PER_CALL]`: a py-spy raw profile of the router
(`py-spy record --format raw`) summed into the parts of a webhook's (or a config lookup's) work,
each as a share of the samples and, given the router's µs per call from the same run, as µs per
call. py-spy samples a thread that is runnable but waiting for a CPU as if it ran, at the line
where it was preempted: on the way back from a system call (a send, the event loop's wait, even
a `getpid()`). Give the router's CPU plus its wait (the bench's `waited`), and read those lines
as wait and native code together (loadtests/README.md, "The router under perf" and "What bounds
the router now").

A sample belongs to the innermost frame that names a part: a Redis or asyncpg call made while
resolving counts as resolving, aiohttp's socket write under our handler as the response. py-spy
often cannot unwind a coroutine to the event loop, so a sample is judged by the frames it has.

The modules compiled with mypyc (scripts/compile) run no Python frames: py-spy sees their work
only with `--native` (which cannot be `--nonblocking`: it stops the router for each sample, so
take fewer), as C functions named after their module (`CPyDef_signatures___verify_twilio`).
`--native` also samples threads blocked on a lock (the default executor's idle workers): those
samples are no work, and are left out.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

# (part, substrings of a frame that put a sample in it): a frame naming two parts (none does
# today) goes to the first listed.
PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "signature check (HMAC-SHA1 over the sorted fields)",
        ("router/signatures.py", "signatures___"),
    ),
    ("form read and parse", ("form_fields", "unquote", "web_request.py", "streams.py")),
    ("metrics (tallies, cache observations)", ("router/metrics.py", "metrics___")),
    (
        "resolve: L1 lookups, routing, draw",
        (
            "store/cache.py",
            "router/resolver.py",
            "store/call_routing.py",
            "store/draw.py",
            "cache___",
            "resolver___",
            "call_routing___",
            "draw___",
        ),
    ),
    (
        "record: writer, batch columns, asyncpg",
        ("router/recorder.py", "store/calls.py", "asyncpg/", "store/db.py", "recorder___"),
    ),
    ("TwiML answer", ("router/providers.py", "providers___")),
    ("token check", ("httpkit/auth.py", "httpkit/token_cache.py", "httpkit/token_usage.py")),
    ("config lookup: served snapshot, config bytes", ("router/views.py", "views___")),
    ("fast lane: HTTP parsing and the answer's write", ("httpkit/fastlane.py", "fastlane___")),
    ("response building and writing (aiohttp)", ("http_writer.py", "web_response.py")),
    (
        "our handler and its glue",
        ("router/webhooks.py", "router/calls.py", "httpkit/", "webhooks___", "calls___"),
    ),
    ("aiohttp request parsing and dispatch", ("aiohttp/",)),
    ("event loop (uvloop, asyncio)", ("asyncio/", "uvloop")),
)
# A native frame of a thread blocked on a lock: not running.
BLOCKED = "PyThread_acquire_lock_timed"
OTHER = "other"


def part_of(frames: list[str]) -> str:
    """The part a sample's stack (outermost frame first) belongs to."""
    for frame in reversed(frames):
        for part, keys in PARTS:
            if any(key in frame for key in keys):
                return part
    return OTHER


def buckets(lines: list[str]) -> Counter[str]:
    """Samples per part, from py-spy's raw lines (`frame;frame;... count`)."""
    counts: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and BLOCKED not in stack:
            counts[part_of(stack.split(";"))] += int(count)
    return counts


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    counts = buckets(Path(argv[0]).read_text().splitlines())
    total = sum(counts.values())
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    us_per_call = float(argv[1]) if len(argv) == 2 else None
    print(f"| part | share of {total} samples |" + (" µs per call |" if us_per_call else ""))
    print("|---|---|" + ("---|" if us_per_call else ""))
    for part, n in counts.most_common():
        share = f"| {part} | {100 * n / total:.1f}% |"
        print(share + (f" {us_per_call * n / total:.0f} |" if us_per_call else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

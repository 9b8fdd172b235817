"""One `/metrics` for every worker of a supervisor (httpkit/serve.py; docs/design.md, section 11).

Workers sharing a port keep their own metrics, and a scrape reaches whichever worker accepts it.
So each worker also serves its own exposition on a private Unix socket, in a directory its
supervisor made for its workers alone, and the worker a scrape reaches reads its siblings' there
at once, labels every sample with the slot of the worker it came from (`worker="0"`...; a slot
keeps its number when its worker is replaced, so the series continue) and merges them into one
exposition. A sibling that does not answer in time (being replaced, or hung) is left out, and
`agentver_metrics_workers_unreachable` says how many were.

This works on the rendered text, whatever builds each worker's exposition. A server without a
supervisor serves its own exposition, unlabelled.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from httpkit.endpoint import Raw, endpoint

log = structlog.get_logger()

# What a supervisor tells each worker: the directory of its workers' sockets, this worker's slot
# and how many slots there are.
DIRECTORY_VAR = "AGENTVER_WORKERS_DIR"
SLOT_VAR = "AGENTVER_WORKER_SLOT"
SLOTS_VAR = "AGENTVER_WORKER_SLOTS"
# Seconds a scrape waits for a sibling's exposition: far above what a healthy worker takes
# (milliseconds, plus an event-loop stall of 100+ ms at worst), well below Prometheus's default
# scrape timeout (10 s), so a hung sibling costs the scrape its series, never the scrape.
SIBLING_TIMEOUT_S = 2.0
# The label naming a sample's worker; no metric of ours may carry it itself.
WORKER_LABEL = b"worker"
UNREACHABLE = "agentver_metrics_workers_unreachable"
# A private exposition is its length, then its bytes: a sibling that dies mid-answer sends
# fewer, and a cut exposition is never merged as if whole.
_LENGTH = struct.Struct("!Q")

# Every app whose /metrics is `metrics` below sets EXPOSITION: its own exposition, rendered.
EXPOSITION = web.AppKey[Callable[[], bytes]]("exposition")


@dataclass(frozen=True)
class Workers:
    """One supervisor's workers, as the worker in `slot` sees them."""

    directory: Path
    slot: int
    slots: int

    def env(self) -> dict[str, str]:
        """The variables that tell a worker this (read back by `from_env`)."""
        return {
            DIRECTORY_VAR: str(self.directory),
            SLOT_VAR: str(self.slot),
            SLOTS_VAR: str(self.slots),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Workers:
        return cls(Path(environ[DIRECTORY_VAR]), int(environ[SLOT_VAR]), int(environ[SLOTS_VAR]))

    def socket(self, slot: int) -> Path:
        return self.directory / f"{slot}.sock"

    def siblings(self) -> list[int]:
        return [slot for slot in range(self.slots) if slot != self.slot]


WORKERS = web.AppKey("workers", Workers)


def join(app: web.Application, workers: Workers) -> None:
    """Make `app`, served by a supervisor's worker, answer scrapes for all of its `workers`
    and serve its own exposition to them (before the app starts)."""
    app[WORKERS] = workers
    app.cleanup_ctx.append(_private_socket)


async def _private_socket(app: web.Application) -> AsyncIterator[None]:
    """This worker's exposition, to its siblings, on its slot's socket."""
    path, exposition = app[WORKERS].socket(app[WORKERS].slot), app[EXPOSITION]

    async def send(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = exposition()
        try:
            writer.write(_LENGTH.pack(len(body)) + body)
            await writer.drain()
        except ConnectionError:
            pass  # the sibling gave up waiting
        finally:
            writer.close()

    path.unlink(missing_ok=True)  # left by the worker this one replaces
    server = await asyncio.start_unix_server(send, path)
    yield
    server.close()
    await server.wait_closed()
    path.unlink(missing_ok=True)


async def _read(path: Path) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        return await reader.readexactly(length)
    finally:
        writer.close()


async def _sibling(workers: Workers, slot: int) -> bytes | None:
    """A sibling's exposition; None when it does not give it within SIBLING_TIMEOUT_S."""
    try:
        return await asyncio.wait_for(_read(workers.socket(slot)), SIBLING_TIMEOUT_S)
    # Not listening (replaced, or still starting), hung, or gone mid-answer.
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        log.warning("metrics_worker_unreachable", worker=slot, error=repr(exc))
        return None


async def exposition(app: web.Application) -> bytes:
    """What a scrape of `app` answers: its own exposition, or, under a supervisor, every
    worker's reachable within SIBLING_TIMEOUT_S, merged; with the count of the others."""
    own = app[EXPOSITION]()
    workers = app.get(WORKERS)
    if workers is None:
        return own + _unreachable(0)
    slots = workers.siblings()
    answers = await asyncio.gather(*(_sibling(workers, slot) for slot in slots))
    reached = [(slot, text) for slot, text in zip(slots, answers, strict=True) if text is not None]
    merged = merge(sorted([(workers.slot, own), *reached]))
    return merged + _unreachable(len(slots) - len(reached))


def _unreachable(count: int) -> bytes:
    return (
        f"# HELP {UNREACHABLE} Workers of this server whose metrics this scrape lacks (being"
        f" replaced, or not answering within {SIBLING_TIMEOUT_S} s).\n"
        f"# TYPE {UNREACHABLE} gauge\n"
        f"{UNREACHABLE} {float(count)}\n"
    ).encode()


def merge(expositions: Iterable[tuple[int, bytes]]) -> bytes:
    """Expositions in the text format (each with a family's HELP and TYPE before its samples,
    as prometheus_client writes them), by worker slot, as one: each family's HELP and TYPE once,
    then every worker's samples of it, each labelled with its slot."""
    # A family's name → its HELP and TYPE lines (by keyword) and its samples.
    families: dict[bytes, tuple[dict[bytes, bytes], list[bytes]]] = {}
    for slot, text in expositions:
        label = WORKER_LABEL + b'="%d"' % slot
        family: tuple[dict[bytes, bytes], list[bytes]] | None = None
        # Lines end at "\n" only: a label value may hold a raw "\r".
        for line in text.split(b"\n"):
            if line.startswith(b"#"):
                words = line.split(b" ", 3)
                if len(words) > 2 and words[1] in (b"HELP", b"TYPE"):
                    family = families.setdefault(words[2], ({}, []))
                    family[0].setdefault(words[1], line)
            elif line:
                if family is None:
                    raise ValueError(f"a sample before any HELP or TYPE: {line[:80]!r}")
                family[1].append(_labelled(line, label))
    lines = [
        line for headers, samples in families.values() for line in (*headers.values(), *samples)
    ]
    return b"".join(line + b"\n" for line in lines)


def _labelled(sample: bytes, label: bytes) -> bytes:
    """`name{a="1"} 2.0` → `name{worker="0",a="1"} 2.0`; `name 2.0` → `name{worker="0"} 2.0`.
    A metric name holds neither "{" nor " ": the first of them ends it."""
    brace, space = sample.find(b"{"), sample.find(b" ")
    if brace == -1 or brace > space:
        return sample[:space] + b"{" + label + b"}" + sample[space:]
    rest = sample[brace + 1 :]
    return sample[: brace + 1] + label + (b"" if rest.startswith(b"}") else b",") + rest


@endpoint(
    "Prometheus exposition of this server: every worker's samples, labelled by worker, when"
    " workers share its port",
    responses={200: Raw("text/plain")},
)
async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=await exposition(request.app), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )

"""The change feed: Postgres NOTIFY on `agentver_changes`, sent by triggers inside every
transaction that changes a draft or a channel's routing, or revokes a token (store/migrations).

A listener owns one dedicated connection (never a pool's). Around every (re)connection it tells
its handler: `lost` when the connection goes, `resync` once LISTEN is in place again (so nothing
committed after that point can be missed), then each `changed`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Protocol

import asyncpg
import structlog

CHANNEL = "agentver_changes"
APPLICATION_NAME = "agentver-change-feed"
# Seconds. An idle LISTEN connection can die silently (a NAT, a failover); probing it this often
# bounds how long a worker trusts its cache without a feed.
KEEPALIVE_S = 2.0
PROBE_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 5.0
# Seconds from the start of one connection attempt (or the end of a session) to the next: quick
# at first, backing off to spare a struggling server. An attempt that waited out its
# CONNECT_TIMEOUT_S (a silent network) has spent its interval already, so through a partition
# one is always under way, and the feed is back as soon as the partition heals.
RECONNECT_MIN_S = 0.05
RECONNECT_MAX_S = 5.0

# Each kind of change, and the payload field that names what changed.
KEY_OF = {"draft": "agent_id", "channel": "number", "token": "token_id"}

log = structlog.get_logger()


@dataclass(frozen=True)
class Change:
    """One announced change: `kind` draft (key = agent id), channel (key = number) or token
    (key = the revoked token's id; revision 0, as a revocation is final)."""

    kind: str
    key: str
    revision: int
    at: float | None  # the database clock at the change, seconds since the epoch


def parse_change(payload: str) -> Change | None:
    """The change a notification announces, or None for a payload this code does not know."""
    try:
        data = json.loads(payload)
        kind = data["kind"]
        key = data[KEY_OF[kind]]
        at = data.get("at")
        return Change(kind, str(key), int(data["revision"]), float(at) if at is not None else None)
    except (ValueError, KeyError, TypeError):
        return None


class FeedHandler(Protocol):
    async def changed(self, change: Change) -> None: ...

    def lost(self) -> None: ...

    async def resync(self) -> None: ...


class ChangeFeed:
    """Listens for changes for as long as `run` runs, reconnecting after any loss."""

    def __init__(
        self, database_url: str, handler: FeedHandler, *, keepalive_s: float = KEEPALIVE_S
    ) -> None:
        self._url = database_url
        self._handler = handler
        self._keepalive_s = keepalive_s
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Listen forever; cancel to stop."""
        delay = RECONNECT_MIN_S
        while True:
            # When this attempt started, or (below) its session ended: the next waits from then.
            since = time.monotonic()
            try:
                conn = await asyncpg.connect(
                    self._url,
                    timeout=CONNECT_TIMEOUT_S,
                    server_settings={"application_name": APPLICATION_NAME},
                )
            # Any class a server going away raises (asyncpg's client-side InterfaceError and
            # ProtocolError among them): escaping here would end the feed for good.
            except Exception as exc:
                log.warning("change_feed_connect_failed", error=type(exc).__name__)
            else:
                try:
                    await self._listen(conn)
                    delay = RECONNECT_MIN_S
                except asyncio.CancelledError:
                    raise
                # A supervisor loop: whatever broke this session, the next one starts clean.
                except Exception as exc:
                    log.warning("change_feed_lost", error=type(exc).__name__)
                finally:
                    self.connected.clear()
                    self._handler.lost()
                    conn.terminate()
                    since = time.monotonic()
            await asyncio.sleep(max(0.0, since + delay - time.monotonic()))
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _listen(self, conn: asyncpg.Connection) -> None:
        events: asyncio.Queue[str | None] = asyncio.Queue()
        conn.add_termination_listener(lambda _conn: events.put_nowait(None))
        await conn.add_listener(
            CHANNEL, lambda _conn, _pid, _channel, payload: events.put_nowait(payload)
        )
        await self._handler.resync()
        self.connected.set()
        log.info("change_feed_listening")
        while True:
            try:
                payload = await asyncio.wait_for(events.get(), self._keepalive_s)
            except TimeoutError:
                await conn.fetchval("SELECT 1", timeout=PROBE_TIMEOUT_S)
                continue
            if payload is None:
                return
            change = parse_change(payload)
            if change is not None:
                await self._handler.changed(change)

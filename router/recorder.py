"""Group commit of call records: calls that arrive while one batch commits share the next
commit, so a burst costs a few fsyncs instead of one per call."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from store.calls import CallRecord, NewCall, record_calls

# Calls per transaction: large enough to absorb a burst, small enough to keep one commit short.
MAX_BATCH = 100

log = structlog.get_logger()

Pending = tuple[NewCall, "asyncio.Future[CallRecord]"]


class CallWriter:
    """Records calls durably; `record` returns once the call's transaction has committed."""

    def __init__(self, pool: asyncpg.Pool, max_batch: int = MAX_BATCH) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()

    async def record(self, call: NewCall) -> CallRecord:
        """The committed record of `call`, or of the earlier call with its provider call id."""
        done: asyncio.Future[CallRecord] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((call, done))
        return await done

    async def run(self) -> None:
        """Write batches until cancelled."""
        batch: list[Pending] = []
        try:
            while True:
                batch = [await self._queue.get()]
                while len(batch) < self._max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                await self._write(batch)
                batch = []
        finally:
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            for _, done in batch:
                if not done.done():
                    done.set_exception(RuntimeError("the call writer stopped"))

    async def _write(self, batch: list[Pending]) -> None:
        try:
            results: list[CallRecord | Exception] = await record_calls(
                self._pool, [call for call, _ in batch]
            )
        # The writer outlives any failure: each waiting call gets the error and falls back.
        except Exception as exc:
            log.warning("call_batch_failed", calls=len(batch), error=type(exc).__name__)
            results = [exc] * len(batch)
        for (_, done), result in zip(batch, results, strict=True):
            if done.done():
                continue
            if isinstance(result, Exception):
                done.set_exception(result)
            else:
                done.set_result(result)

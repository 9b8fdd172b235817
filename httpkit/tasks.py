"""The background tasks the services' cleanup contexts start with the app and stop with it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from httpkit.keys import FORGET_IDLE_SERIES, SETTINGS


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it has stopped; an exception it ended with is raised here,
    so a background task that died is not lost at shutdown."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _every(seconds: float, job: Callable[[], None]) -> None:
    while True:
        await asyncio.sleep(seconds)
        job()


async def forget_idle_series(app: web.Application) -> AsyncIterator[None]:
    """Drops the app's idle metric series (FORGET_IDLE_SERIES) every
    AGENTVER_METRIC_SERIES_IDLE_S, so a series goes one to two of those after its version
    last counted; 0 keeps every series."""
    every_s = app[SETTINGS].metric_series_idle_s
    job = app[FORGET_IDLE_SERIES]
    task = asyncio.create_task(_every(every_s, job)) if every_s else None
    yield
    if task is not None:
        await cancel_and_wait(task)

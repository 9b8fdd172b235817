"""The background tasks the services' cleanup contexts start with the app and stop with it."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it has stopped; an exception it ended with is raised here,
    so a background task that died is not lost at shutdown."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

"""Commands to the Telnyx Call Control API, sent after the webhook has been answered."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import aiohttp
import structlog

from router.metrics import RouterMetrics
from router.providers import telnyx_action_path

# Telnyx ignores a repeated command_id, so retrying a command that may have landed is safe.
ATTEMPTS = 3
RETRY_BASE_S = 0.2
REQUEST_TIMEOUT_S = 5.0
# Seconds that shutdown waits for commands in flight before cancelling them.
SHUTDOWN_GRACE_S = 5.0

log = structlog.get_logger()


class TelnyxApi:
    """Sends Call Control commands in the background, with retries on 5xx and network errors."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str | None,
        metrics: RouterMetrics,
    ) -> None:
        self._session = session
        self._base_url = base_url
        self._api_key = api_key
        self._metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    def command(self, call_control_id: str, action: str, body: dict[str, Any]) -> None:
        """Send `action` for the call soon; returns at once."""
        self._spawn(self._send(call_control_id, action, body))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, call_control_id: str, action: str, body: dict[str, Any]) -> None:
        if not self._api_key:
            log.warning("telnyx_command_skipped", reason="TELNYX_API_KEY unset", action=action)
            self._metrics.provider_commands.labels("telnyx", action, "not_configured").inc()
            return
        url = self._base_url + telnyx_action_path(call_control_id, action)
        headers = {"Authorization": f"Bearer {self._api_key}"}
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        result = "failed"
        for attempt in range(ATTEMPTS):
            try:
                async with self._session.post(
                    url, json=body, headers=headers, timeout=timeout
                ) as resp:
                    if resp.status < 500:
                        result = "ok" if resp.status < 300 else f"http_{resp.status}"
                        break
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning("telnyx_command_error", action=action, error=type(exc).__name__)
            await asyncio.sleep(RETRY_BASE_S * 2**attempt)
        self._metrics.provider_commands.labels("telnyx", action, result).inc()
        if result != "ok":
            log.warning("telnyx_command_failed", action=action, result=result)

    async def drain(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Wait for the commands in flight (at most `grace_s` seconds), then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

"""The admin API fuzzed from its own OpenAPI document (schemathesis): for generated requests to
every operation, as an admin, no 5xx and every response matches the document.

schemathesis sends with `requests`, so the admin app runs on a loop of its own in a thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from admin.app import create_app
from harness.net import free_port
from httpkit.keys import POOL
from store.settings import Settings
from store.tokens import create_token
from tests.openapi_documents import admin_document

# Examples per operation: enough to hit malformed ids, bodies and queries on each of ~27
# operations while the module stays within a minute on two cores.
EXAMPLES = 25


class ThreadedAdmin:
    """The admin app served on 127.0.0.1 from a thread."""

    def __init__(self, app_settings: Settings) -> None:
        self.port = free_port()
        self._app: web.Application | None = None
        self._settings = app_settings
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),))

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        app = create_app(self._settings)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._app = app
        self._started.set()
        await self._stop.wait()
        await runner.cleanup()

    def admin_token(self) -> str:
        """A fresh admin token (each test starts from empty tables)."""
        assert self._app is not None
        pool = self._app[POOL]
        return asyncio.run_coroutine_threadsafe(
            create_token(pool, "fuzzer", "admin"), self._loop
        ).result(10)

    def __enter__(self) -> ThreadedAdmin:
        self._thread.start()
        assert self._started.wait(30), "the admin app did not start"
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()


@pytest.fixture(scope="module")
def admin_server(settings: Settings) -> Iterator[ThreadedAdmin]:
    with ThreadedAdmin(settings) as server:
        yield server


def _operations() -> dict[str, Any]:
    """Every operation of the document by label ("POST /v1/agents"); fails on an invalid one."""
    results: Any = schemathesis.openapi.from_dict(admin_document(Settings())).get_all_operations()
    return {op.label: op for op in (result.ok() for result in results)}


OPERATIONS = _operations()


@pytest.mark.parametrize("label", OPERATIONS)
def test_admin_api_conforms(label: str, admin_server: ThreadedAdmin) -> None:
    token = admin_server.admin_token()

    @given(case=OPERATIONS[label].as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    def fuzz(case: Any) -> None:
        case.call_and_validate(
            base_url=f"http://127.0.0.1:{admin_server.port}",
            headers={"Authorization": f"Bearer {token}"},
            checks=[not_a_server_error, response_schema_conformance],
        )

    fuzz()

"""Router fixtures: a router app (several when a test asks), signed webhook helpers for each
provider, a tiny real aiohttp server standing in for the Telnyx Call Control API, Redis cleaned
of this run's keys around every router test, and the channel pinned through the admin API."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from nacl.signing import SigningKey
from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

from harness.redis import delete_prefixed
from httpkit.serve import FastLaneRunner
from router import signatures, testcall
from router.app import create_app
from router.claims import CallClaims
from router.keys import METRICS, RESOLVER
from router.metrics import RouterMetrics
from router.recorder import CallWriter
from router.spool import Spool
from store.breaker import CircuitBreaker
from store.db import PostgresGuard
from store.settings import Settings
from tests.conftest import AgentFactory, Api
from tests.polling import eventually

TELNYX_API_KEY = "telnyx-test-api-key"
CHANNEL = "+14155550100"
CALLER = "+12125550123"
# The draw salt a test gives a channel (the service picks a random one), so that the variants it
# expects come from hashes worked out with sha256sum, never from the code under test:
# u = the first 16 hex digits of `printf '%s' 'hand-checked-salt:KEY' | sha256sum` / 16^16.
DRAW_SALT = "hand-checked-salt"
# Only a test changes a salt: the service keeps a channel's salt for life.
SET_SALT = """
UPDATE channels SET salt = $2, revision = revision + 1 WHERE number = $1
RETURNING revision
"""


@pytest.fixture(scope="session")
def telnyx_key() -> SigningKey:
    return SigningKey.generate()


@dataclasses.dataclass
class FakeTelnyx:
    """Call Control commands received: (call_control_id, action, body, authorization)."""

    base_url: str
    commands: list[tuple[str, str, dict[str, Any], str]]


@pytest.fixture
async def telnyx_api() -> AsyncIterator[FakeTelnyx]:
    fake = FakeTelnyx("", [])

    async def command(request: web.Request) -> web.Response:
        fake.commands.append(
            (
                request.match_info["call_control_id"],
                request.match_info["action"],
                await request.json(),
                request.headers.get("Authorization", ""),
            )
        )
        return web.json_response({"data": {"result": "ok"}})

    app = web.Application()
    app.router.add_post("/v2/calls/{call_control_id}/actions/{action}", command)
    server = TestServer(app)
    await server.start_server()
    fake.base_url = str(server.make_url("/v2"))
    yield fake
    await server.close()


@pytest.fixture
def router_settings(
    settings: Settings, telnyx_key: SigningKey, telnyx_api: FakeTelnyx, tmp_path: Path
) -> Settings:
    return dataclasses.replace(
        settings,
        spool_dir=tmp_path / "spool",
        public_base_url="https://router.example.com",
        media_stream_url="wss://media.example.com/stream",
        telnyx_public_key=base64.b64encode(bytes(telnyx_key.verify_key)).decode(),
        telnyx_api_key=TELNYX_API_KEY,
        telnyx_api_base=telnyx_api.base_url,
    )


@pytest.fixture
async def clean_redis(settings: Settings) -> AsyncIterator[None]:
    """Delete this run's keys (never anyone else's) before and after the test."""
    await delete_prefixed(settings.redis_url, settings.redis_prefix)
    yield
    await delete_prefixed(settings.redis_url, settings.redis_prefix)


class RouterServer(TestServer):
    """A TestServer serving the app as `python -m router` does: through its fast lanes."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return FastLaneRunner(self.app, **kwargs)


RouterClient = TestClient[web.Request, web.Application]
RouterFactory = Callable[..., Awaitable[RouterClient]]


@pytest.fixture
async def start_router(
    router_settings: Settings, clean_redis: None
) -> AsyncIterator[RouterFactory]:
    """Start a router app (as many as a test wants), all stopped after the test."""
    clients: list[RouterClient] = []

    async def start(**overrides: Any) -> RouterClient:
        client: RouterClient = TestClient(
            RouterServer(create_app(dataclasses.replace(router_settings, **overrides)))
        )
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def router(start_router: RouterFactory) -> RouterClient:
    return await start_router()


class Webhooks:
    """Signed provider requests, made the way each provider makes them."""

    def __init__(self, client: RouterClient, settings: Settings, key: SigningKey) -> None:
        self.client = client
        self.settings = settings
        self.key = key

    def twilio_signature(self, path: str, params: dict[str, str]) -> str:
        assert self.settings.twilio_auth_token
        validator = RequestValidator(self.settings.twilio_auth_token)
        signature: str = validator.compute_signature(self.settings.public_base_url + path, params)
        return signature

    async def twilio(
        self, path: str, params: dict[str, str], signature: str | None = None
    ) -> ClientResponse:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        headers["X-Twilio-Signature"] = signature or self.twilio_signature(path, params)
        return await self.client.post(path, data=urlencode(params), headers=headers)

    async def twilio_call(
        self, sid: str, to: str = CHANNEL, caller: str = CALLER
    ) -> dict[str, str]:
        """Place a Twilio call; returns the TwiML <Stream> parameters (url under "url")."""
        params = {"CallSid": sid, "From": caller, "To": to, "CallStatus": "ringing"}
        resp = await self.twilio("/webhooks/twilio/voice", params)
        assert resp.status == 200, await resp.text()
        return stream_parameters(await resp.text())

    async def generic(
        self,
        body: Any,
        signature: str | None = None,
        path: str = "/webhooks/generic/call",
    ) -> ClientResponse:
        """A generic webhook to `path` (the call webhook by default), signed unless `signature`."""
        raw = json.dumps(body).encode()
        assert self.settings.generic_secret
        headers = {
            "Content-Type": "application/json",
            "X-Agentver-Signature": signature
            or signatures.generic_signature(self.settings.generic_secret, raw),
        }
        return await self.client.post(path, data=raw, headers=headers)

    async def generic_call(self, call_id: str, caller: str = CALLER) -> dict[str, Any]:
        resp = await self.generic({"call_id": call_id, "from": caller, "to": CHANNEL})
        assert resp.status == 200, await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer

    async def telnyx(self, event: dict[str, Any], sent_at: float | None = None) -> ClientResponse:
        raw = json.dumps(event).encode()
        timestamp = str(int(time.time() if sent_at is None else sent_at))
        headers = {
            "Content-Type": "application/json",
            "telnyx-timestamp": timestamp,
            "telnyx-signature-ed25519": signatures.telnyx_signature(self.key, timestamp, raw),
        }
        return await self.client.post("/webhooks/telnyx", data=raw, headers=headers)


def telnyx_event(
    kind: str, ccid: str, *, to: str = CHANNEL, caller: str = CALLER, **payload: Any
) -> dict[str, Any]:
    """A Telnyx Call Control event about call `ccid`, shaped as Telnyx sends it."""
    return {
        "data": {
            "record_type": "event",
            "event_type": kind,
            "occurred_at": "2026-11-26T04:16:10.000000Z",
            "payload": {"call_control_id": ccid, "from": caller, "to": to, **payload},
        }
    }


def telnyx_incoming(ccid: str, *, to: str = CHANNEL, caller: str = CALLER) -> dict[str, Any]:
    """Telnyx's event for a new incoming call, which the router answers."""
    return telnyx_event("call.initiated", ccid, to=to, caller=caller, direction="incoming")


def stream_parameters(twiml: str) -> dict[str, str]:
    """The <Stream> url and <Parameter>s of a TwiML answer that streams the call."""
    params = testcall.stream_parameters(twiml)
    assert params is not None, twiml
    return params


WebhooksTo = Callable[[RouterClient], Webhooks]


@pytest.fixture
def webhooks_to(router_settings: Settings, telnyx_key: SigningKey) -> WebhooksTo:
    """Signed webhooks to any router app the test started."""
    return lambda client: Webhooks(client, router_settings, telnyx_key)


@pytest.fixture
def webhooks(router: RouterClient, webhooks_to: WebhooksTo) -> Webhooks:
    return webhooks_to(router)


@pytest.fixture
async def redis_client(settings: Settings, clean_redis: None) -> AsyncIterator[aioredis.Redis]:
    """A client of this run's Redis, to plant what a worker may have left there (deleted after
    the test, with the rest of this run's keys)."""
    client = aioredis.Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


def metric(router: RouterClient, name: str, labels: dict[str, str]) -> float:
    """A sample of the router's metrics, as a scrape reads it; 0.0 for a series never
    observed."""
    exposition = router.app[METRICS].exposition().decode()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def postgres_loads(router: RouterClient, kind: str) -> float:
    """How often the router read a `kind` ("routing", "version") from Postgres: its cache misses."""
    labels = {"kind": kind, "tier": "postgres", "result": "hit"}
    return metric(router, "agentver_cache_lookups_total", labels)


async def pin(api: Api, body: dict[str, Any], number: str = CHANNEL) -> dict[str, Any]:
    """Set a channel's routing through the admin API."""
    routing: dict[str, Any] = await api.ok("PUT", f"/v1/channels/{number}", json=body)
    return routing


@pytest.fixture
def make_pinned_agent(api: Api, make_agent: AgentFactory) -> AgentFactory:
    """Create an agent with `versions` published and pin a channel (CHANNEL unless `number`) to
    its version `pinned` (None, the default: its draft)."""

    async def make(
        versions: int = 0, pinned: int | None = None, number: str = CHANNEL, **config: Any
    ) -> dict[str, Any]:
        agent = await make_agent(versions=versions, **config)
        await pin(api, {"agent_id": agent["id"], "version": pinned}, number)
        return agent

    return make


async def use_draw_salt(pool: asyncpg.Pool, number: str = CHANNEL) -> dict[str, Any]:
    """Give the channel DRAW_SALT; its new revision, for `sees`."""
    return {"revision": await pool.fetchval(SET_SALT, number, DRAW_SALT)}


async def list_calls(api: Api, query: str = "") -> list[dict[str, Any]]:
    body = await api.ok("GET", f"/v1/calls?limit=1000{query}")
    items: list[dict[str, Any]] = body["items"]
    return items


async def sees(router: RouterClient, routing: dict[str, Any]) -> None:
    """Wait until the router resolves with this routing revision."""

    async def current() -> bool:
        seen = await router.app[RESOLVER].routing(CHANNEL)
        return seen is not None and seen.revision == routing["revision"]

    await eventually(current)


@dataclasses.dataclass
class RoutedChannel:
    """CHANNEL, pinned through the admin API; each pin returns once `router` resolves with it,
    so that the next call is routed the new way."""

    api: Api
    router: RouterClient
    pool: asyncpg.Pool

    async def pin(self, body: dict[str, Any]) -> dict[str, Any]:
        routing = await pin(self.api, body)
        await sees(self.router, routing)
        return routing

    async def pin_with_draw_salt(self, body: dict[str, Any]) -> dict[str, Any]:
        """Pin and give the channel DRAW_SALT: its callers draw the hand-worked variants.
        Returns the routing as pinned."""
        routing = await pin(self.api, body)
        await sees(self.router, await use_draw_salt(self.pool))
        return routing


@pytest.fixture
def channel(api: Api, router: RouterClient, pool: asyncpg.Pool) -> RoutedChannel:
    return RoutedChannel(api, router, pool)


@contextlib.asynccontextmanager
async def running_writer(
    pool: asyncpg.Pool, spool: Spool, breaker: CircuitBreaker, claims: CallClaims | None = None
) -> AsyncIterator[CallWriter]:
    """A call writer running for the body of the `async with`, spooling to `spool` (opened,
    then closed), Postgres' health as `breaker` says; it must still run at the end."""
    spool.open()
    writer = CallWriter(pool, spool, PostgresGuard(breaker), RouterMetrics(), claims)
    task = asyncio.create_task(writer.run())
    yield writer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    spool.close()

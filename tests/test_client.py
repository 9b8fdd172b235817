"""The runtime client (agentver/client.py) against a real router and admin service; a tiny real
aiohttp server in front of the router fails, stalls or tampers with answers on demand."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agentver.client import (
    AgentverClient,
    ConfigMismatch,
    InvalidRequest,
    NotFound,
    Unauthorized,
    Unavailable,
)
from harness.net import free_port
from tests.conftest import AgentFactory, Api
from tests.router_fixtures import RouterClient, Webhooks

ANALYSED = {"name": "outcome", "type": "string", "description": "what the caller got"}


@dataclasses.dataclass
class Upstream:
    """Forwards to the router: the next `failures` requests get a 503, each waits `delay_s`
    first, `tamper` rewrites a JSON answer. `paths` lists every request it saw."""

    target: str
    url: str = ""
    failures: int = 0
    delay_s: float = 0.0
    tamper: Callable[[Any], Any] | None = None
    paths: list[str] = dataclasses.field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.raw_path)
        await asyncio.sleep(self.delay_s)
        if self.failures > 0:
            self.failures -= 1
            return web.json_response(
                {"error": {"code": "down", "message": "try later"}}, status=503
            )
        headers = {"Authorization": request.headers.get("Authorization", "")}
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, self.target + request.raw_path, headers=headers
            ) as resp,
        ):
            body = await resp.read()
        if self.tamper is not None and resp.status == 200:
            body = json.dumps(self.tamper(json.loads(body))).encode()
        return web.Response(status=resp.status, body=body, content_type="application/json")


@pytest.fixture
async def upstream(router: RouterClient) -> AsyncIterator[Upstream]:
    proxy = Upstream(str(router.make_url("")).rstrip("/"))
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy.handle)
    server = TestServer(app)
    await server.start_server()
    proxy.url = str(server.make_url("")).rstrip("/")
    yield proxy
    await server.close()


ClientFactory = Callable[..., AgentverClient]


@pytest.fixture
async def make_client(api: Api, upstream: Upstream) -> AsyncIterator[ClientFactory]:
    """Clients of the router (through `upstream`) and the admin service, closed after the test."""
    clients: list[AgentverClient] = []

    def make(**overrides: Any) -> AgentverClient:
        options: dict[str, Any] = {
            "router_url": upstream.url,
            "admin_url": str(api.client.make_url("")),
            "token": api.tokens["runtime"],
            **overrides,
        }
        clients.append(AgentverClient(**options))
        return clients[-1]

    yield make
    for client in clients:
        await client.close()


@pytest.fixture
async def served(api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks) -> dict[str, Any]:
    """A Twilio call to a channel pinned to version 2 (whose config declares an analysis field):
    its stream parameters, with the version's config under "config"."""
    agent = await make_pinned_agent(
        versions=2, pinned=2, call_analysis={"prompt": "Summarise.", "fields": [ANALYSED]}
    )
    params = await webhooks.twilio_call("CA-client")
    version = await api.ok("GET", f"/v1/agents/{agent['id']}/versions/2")
    return {**params, "config": version["config"]}


async def test_call_config_is_the_config_served(
    make_client: ClientFactory, upstream: Upstream, served: dict[str, Any]
) -> None:
    client = make_client()

    got = await client.call_config(served["call_id"])

    assert dataclasses.asdict(got) == {
        "call_id": served["call_id"],
        "agent_id": served["agent_id"],
        "version": 2,
        "draft_revision": None,
        "config_hash": served["config_hash"],
        "config": served["config"],
    }
    assert got.version_label == served["version"] == "2"
    # Its config joined the cache: fetching it by hash asks nobody.
    asked = len(upstream.paths)
    assert await client.config(served["config_hash"]) == served["config"]
    assert len(upstream.paths) == asked == 1


async def test_config_by_hash_is_fetched_once_and_copied(
    make_client: ClientFactory, upstream: Upstream, served: dict[str, Any]
) -> None:
    client = make_client()

    configs = await asyncio.gather(*(client.config(served["config_hash"]) for _ in range(20)))

    assert upstream.paths == [f"/v1/configs/{served['config_hash']}"]
    assert all(config == served["config"] for config in configs)
    # Each caller has its own copy: one changing it changes nobody else's, nor the cache.
    configs[0]["system_prompt"] = "changed by one call"
    assert configs[1] == served["config"]
    assert await client.config(served["config_hash"]) == served["config"]


async def test_a_5xx_is_retried(
    make_client: ClientFactory, upstream: Upstream, served: dict[str, Any]
) -> None:
    upstream.failures = 2

    got = await make_client(attempts=3).call_config(served["call_id"])

    assert got.config == served["config"]
    assert len(upstream.paths) == 3


async def test_persistent_5xx_is_unavailable_after_every_attempt(
    make_client: ClientFactory, upstream: Upstream, served: dict[str, Any]
) -> None:
    upstream.failures = 10

    with pytest.raises(Unavailable) as raised:
        await make_client(attempts=3).config(served["config_hash"])

    assert (raised.value.attempts, raised.value.last) == (3, "HTTP 503")
    assert len(upstream.paths) == 3


async def test_a_slow_answer_times_out_and_is_retried(
    make_client: ClientFactory, upstream: Upstream, served: dict[str, Any]
) -> None:
    upstream.delay_s = 1.0

    with pytest.raises(Unavailable) as raised:
        await make_client(timeout_s=0.1, attempts=2).call_config(served["call_id"])

    assert raised.value.attempts == 2
    assert "Timeout" in raised.value.last
    assert len(upstream.paths) == 2


async def test_a_refused_connection_is_unavailable(make_client: ClientFactory) -> None:
    client = make_client(router_url=f"http://127.0.0.1:{free_port()}", attempts=2)

    with pytest.raises(Unavailable) as raised:
        await client.call_config("call_x")

    assert "ClientConnectorError" in raised.value.last


async def test_client_errors_are_not_retried(
    make_client: ClientFactory, upstream: Upstream, served: dict[str, Any]
) -> None:
    client = make_client()

    with pytest.raises(NotFound) as missing:
        await client.call_config("call_unknown")
    assert missing.value.status == 404 and missing.value.code == "call_not_found"
    with pytest.raises(NotFound):
        await client.config("0" * 64)
    # A call id is one path segment: it cannot reach another resource.
    with pytest.raises(NotFound):
        await client.call_config(f"../../configs/{served['config_hash']}")
    assert len(upstream.paths) == 3
    with pytest.raises(Unauthorized) as refused:
        await make_client(token="not-a-token").call_config(served["call_id"])
    assert refused.value.status == 401
    with pytest.raises(ValueError, match="64 lowercase hex"):
        await client.config("../../metrics")
    assert len(upstream.paths) == 4


async def test_a_config_that_does_not_match_its_hash_is_refused_and_not_cached(
    make_client: ClientFactory, upstream: Upstream, served: dict[str, Any]
) -> None:
    client = make_client()
    upstream.tamper = lambda config: {**config, "system_prompt": "injected"}

    with pytest.raises(ConfigMismatch):
        await client.config(served["config_hash"])
    upstream.tamper = lambda call: {**call, "config": {**call["config"], "name": "other"}}
    with pytest.raises(ConfigMismatch):
        await client.call_config(served["call_id"])

    upstream.tamper = None
    assert await client.config(served["config_hash"]) == served["config"]
    assert len(upstream.paths) == 3


async def test_post_analysis_records_the_results(
    api: Api, make_client: ClientFactory, served: dict[str, Any]
) -> None:
    client = make_client()

    call = await client.post_analysis(
        served["call_id"], sentiment="negative", automated=False, fields={"outcome": "refund"}
    )

    assert (call["sentiment"], call["automated"]) == ("negative", False)
    stored = await api.ok("GET", f"/v1/calls/{served['call_id']}")
    assert stored["analysis"] == {
        "sentiment": "negative",
        "automated": False,
        "fields": {"outcome": "refund"},
        "posted_at": stored["analysis"]["posted_at"],
        "posted_by": "runtime-user",
    }
    # A retried post replaces the analysis: the call has one.
    await client.post_analysis(served["call_id"], sentiment="positive", automated=True)
    stored = await api.ok("GET", f"/v1/calls/{served['call_id']}")
    assert (stored["sentiment"], stored["automated"]) == ("positive", True)


async def test_post_analysis_refusals_name_the_field(
    api: Api, make_client: ClientFactory, served: dict[str, Any]
) -> None:
    client = make_client()

    with pytest.raises(InvalidRequest) as invalid:
        await client.post_analysis(
            served["call_id"], sentiment="negative", automated=True, fields={"injected": 1}
        )
    assert invalid.value.status == 422
    assert [d["path"] for d in invalid.value.details] == ["fields.injected"]
    with pytest.raises(InvalidRequest) as invalid:
        await client.post_analysis(served["call_id"], sentiment="angry", automated=True)  # type: ignore[arg-type]
    assert [d["path"] for d in invalid.value.details] == ["sentiment"]
    with pytest.raises(NotFound):
        await client.post_analysis("call_unknown", sentiment="neutral", automated=True)
    with pytest.raises(Unauthorized) as refused:
        await make_client(token=api.tokens["viewer"]).post_analysis(
            served["call_id"], sentiment="neutral", automated=True
        )
    assert refused.value.status == 403

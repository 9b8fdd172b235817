"""The router end to end: signed webhooks in, native answers out, every call recorded once."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode

import asyncpg
import pytest

from router.keys import TELNYX
from tests.conftest import AgentFactory, Api
from tests.polling import eventually
from tests.router_fixtures import (
    CALLER,
    CHANNEL,
    TELNYX_API_KEY,
    FakeTelnyx,
    RoutedChannel,
    RouterClient,
    RouterFactory,
    Webhooks,
    WebhooksTo,
    list_calls,
    metric,
    pin,
    stream_parameters,
    telnyx_event,
    telnyx_incoming,
)

STREAM_URL = "wss://media.example.com/stream"
# A stream URL a router accepts (ws(s), no query) that breaks XML unless escaped.
HOSTILE_STREAM_URL = "wss://media.example.com/a&b<c>\"d'e/</Stream>"


@pytest.fixture
async def pinned_v1(api: Api, make_pinned_agent: AgentFactory) -> dict[str, Any]:
    """Version 1 of an agent that has a version 2 as well, CHANNEL pinned to version 1. Asked
    for after the router, it is pinned while the router runs: the first call is a cache miss."""
    agent = await make_pinned_agent(versions=2, pinned=1)
    v1: dict[str, Any] = await api.ok("GET", f"/v1/agents/{agent['id']}/versions/1")
    return v1


async def test_pinned_version_is_served_and_recorded(
    api: Api, webhooks: Webhooks, pinned_v1: dict[str, Any]
) -> None:
    answer = await webhooks.twilio_call("CA-pinned")

    call_id = answer["call_id"]
    assert answer == {
        "url": STREAM_URL,
        "call_id": call_id,
        "agent_id": pinned_v1["agent_id"],
        "version": "1",
        "config_hash": pinned_v1["config_hash"],
    }
    [call] = await list_calls(api)
    assert call == {
        "call_id": call_id,
        "provider": "twilio",
        "provider_call_id": "CA-pinned",
        "channel": CHANNEL,
        "from": CALLER,
        "agent_id": pinned_v1["agent_id"],
        "version": 1,
        "draft_revision": None,
        "config_hash": pinned_v1["config_hash"],
        "variant": "default",
        "status": "initiated",
        "started_at": call["started_at"],
        "ended_at": None,
        "duration_s": None,
        "sentiment": None,
        "automated": None,
    }


async def test_twiml_stream_url_has_no_query_and_values_are_escaped(
    api: Api, make_pinned_agent: AgentFactory, start_router: RouterFactory, webhooks_to: WebhooksTo
) -> None:
    await make_pinned_agent()
    # The stream URL is echoed into the TwiML as is: markup in it must arrive as text.
    hostile = webhooks_to(await start_router(media_stream_url=HOSTILE_STREAM_URL))
    params = {"CallSid": 'CA<&">', "From": CALLER, "To": CHANNEL}
    resp = await hostile.twilio("/webhooks/twilio/voice", params)
    text = await resp.text()
    assert resp.content_type == "application/xml"
    stream = ET.fromstring(text).find("./Connect/Stream")  # noqa: S314 (our own answer)
    assert stream is not None, text
    assert stream.attrib["url"] == HOSTILE_STREAM_URL and "?" not in stream.attrib["url"]
    [call] = await list_calls(api)
    assert call["provider_call_id"] == 'CA<&">' and call["version"] is None


async def test_retried_call_sid_gets_the_same_answer_and_one_record(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks, router: RouterClient
) -> None:
    agent = await make_pinned_agent(versions=1, pinned=1)

    first = await webhooks.twilio_call("CA-retry")
    again = await webhooks.twilio_call("CA-retry")
    burst = await asyncio.gather(*(webhooks.twilio_call("CA-burst") for _ in range(8)))

    assert again == first
    assert all(b == burst[0] for b in burst)
    calls = await list_calls(api)
    assert sorted(c["provider_call_id"] for c in calls) == ["CA-burst", "CA-retry"]
    labels = {"provider": "twilio", "variant": "default", "agent_id": agent["id"], "version": "1"}
    assert metric(router, "agentver_calls_routed_total", {**labels, "outcome": "retry"}) == 8


async def test_every_committed_batch_is_timed(
    make_pinned_agent: AgentFactory, webhooks: Webhooks, router: RouterClient
) -> None:
    """agentver_call_commit_seconds: one observation per batch that reached Postgres, the time
    its calls waited on the commit."""
    await make_pinned_agent(versions=1, pinned=1)

    await asyncio.gather(*(webhooks.twilio_call(f"CA-timed-{n}") for n in range(20)))

    batches = metric(router, "agentver_call_batch_size_count", {})
    assert batches >= 1
    assert metric(router, "agentver_call_commit_seconds_count", {}) == batches
    assert metric(router, "agentver_call_commit_seconds_sum", {}) > 0


async def test_a_webhook_the_fast_lane_hands_to_aiohttp_is_answered_alike(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks, router: RouterClient
) -> None:
    """The same Twilio webhook plainly framed (the fast lane's) and chunked (aiohttp's), and a
    forged one each way: the same answers, and the calls recorded once each."""
    agent = await make_pinned_agent(versions=1, pinned=1)
    path = "/webhooks/twilio/voice"

    def request(sid: str, chunked: bool, forged: bool = False) -> bytes:
        params = {"CallSid": sid, "From": CALLER, "To": CHANNEL}
        signature = webhooks.twilio_signature(path, {**params, "To": "+1555"} if forged else params)
        body = urlencode(params).encode()
        framing = (
            f"Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode()
            + body
            + b"\r\n0\r\n\r\n"
            if chunked
            else f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        head = (
            f"POST {path} HTTP/1.1\r\nHost: router\r\nX-Twilio-Signature: {signature}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
        )
        return head.encode() + framing

    answers = {}
    for sid, chunked, forged in [
        ("CA-lane", False, False),
        ("CA-aiohttp", True, False),
        ("CA-forged-lane", False, True),
        ("CA-forged-aiohttp", True, True),
    ]:
        reader, writer = await asyncio.open_connection(router.host, router.port)
        writer.write(request(sid, chunked, forged))
        head, _, body = (await reader.read(65536)).partition(b"\r\n\r\n")
        writer.close()
        content_type = [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-type")]
        answers[sid] = (head.split(b" ")[1], content_type, body)

    assert (
        answers["CA-lane"][:2]
        == answers["CA-aiohttp"][:2]
        == (b"200", [b"Content-Type: application/xml; charset=utf-8"])
    )
    streams = [stream_parameters(answers[sid][2].decode()) for sid in ("CA-lane", "CA-aiohttp")]
    for stream in streams:
        assert (stream["agent_id"], stream["version"]) == (agent["id"], "1")
    assert answers["CA-forged-lane"] == answers["CA-forged-aiohttp"]
    assert answers["CA-forged-lane"][0] == b"403"
    calls = await list_calls(api)
    assert sorted(c["provider_call_id"] for c in calls) == ["CA-aiohttp", "CA-lane"]


async def test_bad_signatures_are_refused_and_record_nothing(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks, router: RouterClient
) -> None:
    await make_pinned_agent()
    params = {"CallSid": "CA-forged", "From": CALLER, "To": CHANNEL}
    forged = webhooks.twilio_signature("/webhooks/twilio/voice", {**params, "To": "+15550000000"})
    event = {"data": {"event_type": "call.initiated", "payload": {"call_control_id": "v3:x"}}}

    responses = [
        await webhooks.twilio("/webhooks/twilio/voice", params, signature=forged),
        await router.post("/webhooks/twilio/voice", data=params),  # no signature at all
        await webhooks.twilio("/webhooks/twilio/status", params, signature=forged),
        await webhooks.generic(
            {"call_id": "g-1", "from": CALLER, "to": CHANNEL}, signature="sha256=00"
        ),
        await webhooks.telnyx(event, sent_at=time.time() - 600),
    ]

    assert [r.status for r in responses] == [403] * 5
    assert (await responses[0].json())["error"]["code"] == "forbidden"
    assert await list_calls(api) == []
    rejected = "agentver_webhooks_rejected_total"
    assert metric(router, rejected, {"provider": "twilio", "reason": "bad_signature"}) == 2
    assert metric(router, rejected, {"provider": "twilio", "reason": "missing_signature"}) == 1
    assert metric(router, rejected, {"provider": "generic", "reason": "bad_signature"}) == 1
    assert metric(router, rejected, {"provider": "telnyx", "reason": "stale_timestamp"}) == 1


async def test_unknown_number_hears_the_fallback(
    api: Api,
    webhooks: Webhooks,
    router: RouterClient,
    start_router: RouterFactory,
    webhooks_to: WebhooksTo,
) -> None:
    params = {"CallSid": "CA-lost", "From": CALLER, "To": "+15550001111"}
    resp = await webhooks.twilio("/webhooks/twilio/voice", params)
    assert resp.status == 200
    assert await resp.text() == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Sorry, this number cannot take '
        "your call right now. Goodbye.</Say><Hangup /></Response>"
    )
    reasons = {"provider": "twilio", "reason": "unknown_number"}
    assert metric(router, "agentver_fallbacks_total", reasons) == 1
    assert await list_calls(api) == []

    dialing = webhooks_to(await start_router(fallback="dial:+1 415 555 0199"))
    resp = await dialing.twilio("/webhooks/twilio/voice", params)
    assert "<Dial>+14155550199</Dial>" in await resp.text()
    generic = await dialing.generic({"call_id": "g-lost", "from": CALLER, "to": "+15550001111"})
    assert await generic.json() == {"fallback": {"action": "dial", "number": "+14155550199"}}


async def test_draft_pin_follows_an_edit_within_the_propagation_budget(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks
) -> None:
    agent = await make_pinned_agent()
    before = await webhooks.generic_call("g-0")
    assert before["version"] == "draft"

    draft = await api.ok(
        "PATCH", f"/v1/agents/{agent['id']}/draft", json={"config": {"welcome_message": "Hi!"}}
    )
    call_numbers = itertools.count(1)
    answer = await eventually(
        lambda: webhooks.generic_call(f"g-{next(call_numbers)}"),
        lambda answer: answer["config_hash"] == draft["config_hash"],
    )
    calls = {c["call_id"]: c for c in await list_calls(api)}
    assert calls[answer["call_id"]]["draft_revision"] == draft["revision"]
    assert calls[before["call_id"]]["draft_revision"] == draft["revision"] - 1


async def test_generic_answer(webhooks: Webhooks, pinned_v1: dict[str, Any]) -> None:
    answer = await webhooks.generic_call("g-answer")
    assert answer == {
        "call_id": answer["call_id"],
        "agent_id": pinned_v1["agent_id"],
        "version": "1",
        "config_hash": pinned_v1["config_hash"],
        "stream_url": STREAM_URL,
        "config_url": f"https://router.example.com/v1/calls/{answer['call_id']}/config",
    }
    resp = await webhooks.generic({"call_id": "g-bad", "from": CALLER})
    assert resp.status == 400


async def test_runtime_lookup_returns_the_served_config_after_a_re_pin(
    api: Api, webhooks: Webhooks, router: RouterClient, pinned_v1: dict[str, Any]
) -> None:
    agent_id = pinned_v1["agent_id"]
    answer = await webhooks.twilio_call("CA-lookup")
    await pin(api, {"agent_id": agent_id, "version": 2})
    await api.ok("PATCH", f"/v1/agents/{agent_id}/draft", json={"config": {"name": "New"}})

    auth = api.bearer("runtime")
    resp = await router.get(f"/v1/calls/{answer['call_id']}/config", headers=auth)
    assert resp.status == 200
    assert await resp.json() == {
        "call_id": answer["call_id"],
        "agent_id": agent_id,
        "version": 1,
        "draft_revision": None,
        "config_hash": pinned_v1["config_hash"],
        "config": pinned_v1["config"],
    }
    assert (await router.get(f"/v1/calls/{answer['call_id']}/config")).status == 401
    assert (await router.get("/v1/calls/nope/config", headers=auth)).status == 404
    # An escaped call id is aiohttp's to decode (the fast lane hands it over): the same answer.
    escaped = answer["call_id"].replace("_", "%5F")
    resp = await router.get(f"/v1/calls/{escaped}/config", headers=auth)
    assert resp.status == 200
    assert (await resp.json())["config"] == pinned_v1["config"]
    assert (await router.get(f"/v1/calls/{escaped}/config")).status == 401


async def test_config_blobs_are_immutable_and_cacheable(
    api: Api, make_agent: AgentFactory, router: RouterClient
) -> None:
    agent = await make_agent()
    digest = agent["draft"]["config_hash"]
    auth = api.bearer("viewer")

    resp = await router.get(f"/v1/configs/{digest}", headers=auth)
    assert resp.status == 200
    assert await resp.json() == agent["draft"]["config"]
    assert resp.headers["ETag"] == f'"{digest}"'
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"

    cached = await router.get(
        f"/v1/configs/{digest}", headers={**auth, "If-None-Match": f'"{digest}"'}
    )
    assert cached.status == 304 and cached.headers["ETag"] == f'"{digest}"'
    assert (await router.get("/v1/configs/" + "0" * 64, headers=auth)).status == 404
    assert (await router.get("/v1/configs/not-a-hash", headers=auth)).status == 404


async def test_twilio_status_callback_closes_the_call(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks, router: RouterClient
) -> None:
    agent = await make_pinned_agent()
    await webhooks.twilio_call("CA-status")
    status = {
        "CallSid": "CA-status",
        "CallStatus": "completed",
        "CallDuration": "42",
        "Timestamp": "Thu, 26 Nov 2026 04:15:00 +0000",
    }
    resp = await webhooks.twilio("/webhooks/twilio/status", status)
    assert resp.status == 204
    again = await webhooks.twilio("/webhooks/twilio/status", {**status, "CallDuration": "99"})
    assert again.status == 204
    [call] = await list_calls(api)
    assert (call["status"], call["duration_s"]) == ("completed", 42.0)
    assert call["ended_at"].startswith("2026-11-26T04:15:00")
    # Observed once, under the version served, however often the ending is redelivered.
    exposition = await (await router.get("/metrics")).text()
    labels = f'agent_id="{agent["id"]}",version="draft"'
    assert f"agentver_call_duration_seconds_count{{{labels}}} 1.0" in exposition
    assert f"agentver_call_duration_seconds_sum{{{labels}}} 42.0" in exposition


async def test_a_version_s_series_go_once_it_serves_no_call_and_come_back_from_zero(
    api: Api,
    make_pinned_agent: AgentFactory,
    start_router: RouterFactory,
    webhooks_to: WebhooksTo,
) -> None:
    """A worker drops the per-version series that counted nothing for a while, so its scrape
    does not grow with every version it ever served."""
    agent = await make_pinned_agent()
    router = await start_router(metric_series_idle_s=1.0)
    webhooks = webhooks_to(router)
    routed = {
        "provider": "twilio",
        "variant": "default",
        "outcome": "routed",
        "agent_id": agent["id"],
        "version": "draft",
    }
    ended = {"agent_id": agent["id"], "version": "draft"}
    status = {"CallStatus": "completed", "CallDuration": "42"}

    await webhooks.twilio_call("CA-idle-1")
    resp = await webhooks.twilio("/webhooks/twilio/status", {**status, "CallSid": "CA-idle-1"})
    assert resp.status == 204
    assert metric(router, "agentver_calls_routed_total", routed) == 1
    assert metric(router, "agentver_call_duration_seconds_count", ended) == 1

    async def gone() -> bool:
        page = (await (await router.get("/metrics")).read()).decode()
        return agent["id"] not in page

    await eventually(gone, within_s=5)
    await webhooks.twilio_call("CA-idle-2")
    assert metric(router, "agentver_calls_routed_total", routed) == 1


async def test_progress_statuses_only_move_forward(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks
) -> None:
    await make_pinned_agent()
    await webhooks.twilio_call("CA-order")
    # (status sent, status recorded): a late `ringing` overwrites neither in-progress nor completed.
    for sent, recorded in (
        ("in-progress", "in-progress"),
        ("ringing", "in-progress"),
        ("completed", "completed"),
        ("ringing", "completed"),
    ):
        await webhooks.twilio(
            "/webhooks/twilio/status", {"CallSid": "CA-order", "CallStatus": sent}
        )
        [call] = await list_calls(api)
        assert call["status"] == recorded, sent


async def _deliver(webhooks: Webhooks, *events: dict[str, Any]) -> None:
    """Deliver Telnyx events, each accepted, then wait for the Call Control commands they cause."""
    for event in events:
        assert (await webhooks.telnyx(event)).status == 200
    await webhooks.client.app[TELNYX].drain()


async def test_telnyx_call_is_answered_with_the_stream_then_closed(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks, telnyx_api: FakeTelnyx
) -> None:
    agent = await make_pinned_agent(versions=1, pinned=1)
    initiated = telnyx_incoming("v3:abc")

    await _deliver(webhooks, initiated, initiated)  # the second one redelivered

    [call] = await list_calls(api)
    assert len(telnyx_api.commands) == 2
    ccid, action, body, auth = telnyx_api.commands[0]
    assert (ccid, action, auth) == ("v3:abc", "answer", f"Bearer {TELNYX_API_KEY}")
    assert telnyx_api.commands[1][2] == body  # same command_id: Telnyx runs it once
    assert body["stream_url"] == STREAM_URL and body["stream_track"] == "both_tracks"
    assert json.loads(base64.b64decode(body["client_state"])) == {
        "call_id": call["call_id"],
        "agent_id": agent["id"],
        "version": "1",
        "config_hash": call["config_hash"],
    }

    hangup = telnyx_event(
        "call.hangup",
        "v3:abc",
        start_time="2026-11-26T04:15:00.000000Z",
        end_time="2026-11-26T04:16:10.000000Z",
    )
    await _deliver(webhooks, hangup, hangup)
    [call] = await list_calls(api)
    assert (call["status"], call["duration_s"]) == ("completed", 70.0)


async def test_telnyx_hangup_before_initiated_is_not_answered(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks, telnyx_api: FakeTelnyx
) -> None:
    await make_pinned_agent()
    hangup = telnyx_event(
        "call.hangup",
        "v3:late",
        start_time="2026-11-26T04:15:00.000000Z",
        end_time="2026-11-26T04:15:05.000000Z",
    )
    await _deliver(webhooks, hangup, telnyx_incoming("v3:late"))

    [call] = await list_calls(api)
    assert (call["status"], call["duration_s"]) == ("completed", 5.0)
    assert telnyx_api.commands == []


async def test_call_list_filters_and_pages(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks, channel: RoutedChannel
) -> None:
    agent = await make_pinned_agent(versions=1, pinned=1)
    await webhooks.generic_call("g-v1")
    await channel.pin({"agent_id": agent["id"], "version": None})
    await webhooks.generic_call("g-draft-1")
    await webhooks.generic_call("g-draft-2")

    assert [c["provider_call_id"] for c in await list_calls(api, "&version=1")] == ["g-v1"]
    drafts = await list_calls(api, f"&version=draft&agent_id={agent['id']}")
    assert [c["provider_call_id"] for c in drafts] == ["g-draft-2", "g-draft-1"]
    assert await list_calls(api, "&variant=nope") == []
    assert len(await list_calls(api, "&channel=%2B14155550100")) == 3
    assert await list_calls(api, "&since=2999-01-01T00:00:00Z") == []
    assert len(await list_calls(api, "&until=2999-01-01T00:00:00%2B00:00")) == 3

    page = await api.ok("GET", "/v1/calls?limit=2")
    rest = await api.ok("GET", f"/v1/calls?limit=2&cursor={page['next_cursor']}")
    assert [c["provider_call_id"] for c in page["items"] + rest["items"]] == [
        "g-draft-2",
        "g-draft-1",
        "g-v1",
    ]
    assert rest["next_cursor"] is None
    assert (await api.call("GET", "/v1/calls?version=two")).status == 400
    assert (await api.call("GET", "/v1/calls", role=None)).status == 401


async def test_operations_endpoints(router: RouterClient) -> None:
    assert (await router.get("/healthz")).status == 200
    ready = await router.get("/readyz")
    assert (ready.status, await ready.json()) == (200, {"status": "ready", "degraded": []})
    metrics = await router.get("/metrics")
    assert metrics.status == 200
    assert "agentver_change_feed_connected 1.0" in await metrics.text()


async def test_readyz_names_a_degraded_redis(start_router: RouterFactory) -> None:
    router = await start_router(redis_url="redis://127.0.0.1:1/0")
    ready = await router.get("/readyz")
    assert (ready.status, await ready.json()) == (
        503,
        {"status": "degraded", "degraded": ["redis"]},
    )


async def test_the_worker_that_recorded_a_call_answers_its_config_lookups_from_memory(
    api: Api,
    make_pinned_agent: AgentFactory,
    webhooks: Webhooks,
    router: RouterClient,
    start_router: RouterFactory,
    pool: asyncpg.Pool,
) -> None:
    await make_pinned_agent(versions=1, pinned=1)
    answer = await webhooks.twilio_call("CA-remembered")
    other = await start_router()
    auth = api.bearer("runtime")
    path = f"/v1/calls/{answer['call_id']}/config"
    for worker in (router, other):  # the other worker reads the call from Postgres
        assert (await worker.get(path, headers=auth)).status == 200

    # Gone from Postgres (only a test can do that): the recording worker remembers what the
    # call was served, the other has only Postgres to ask.
    await pool.execute("DELETE FROM calls; DELETE FROM call_keys")

    remembered = await router.get(path, headers=auth)
    assert remembered.status == 200
    assert (await remembered.json())["config_hash"] == answer["config_hash"]
    assert (await other.get(path, headers=auth)).status == 404

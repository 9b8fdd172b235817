"""Hostile input at both services: oversized and malformed bodies, odd numbers and text, SQL
metacharacters, replayed and misdirected signatures. None may yield a 5xx or a stack trace, and
no secret or signature may reach a log line."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import time
from typing import Any

import pytest
import structlog
from aiohttp import ClientResponse

from store.numbers import normalize_e164
from store.settings import Settings
from tests.conftest import AgentFactory, Api, minimal_config
from tests.router_fixtures import (
    CALLER,
    CHANNEL,
    TELNYX_API_KEY,
    RouterClient,
    Webhooks,
    telnyx_incoming,
)

HOSTILE_TEXT = [
    "Robert'); DROP TABLE calls;--",
    "' OR '1'='1",
    "%s %n $1 \\x00 \\",
    "😀 Zoë ☎ مرحبا",
    "\u202etxet desrever\u200b",
    "line\r\nbreak\ttab\x07bell\x1b[31m",
    "\x00nul",
    "x" * 5000,
    "",
]
BAD_NUMBERS = ["", "+", "0", "+0000", "+1" + "9" * 30, "tel:+14155550100", "+1415555O100"]


async def _no_5xx(resp: ClientResponse) -> str:
    text = await resp.text()
    assert resp.status < 500, (resp.status, text)
    assert "Traceback" not in text and 'File "' not in text
    return text


def _call(sid: str, to: str = CHANNEL, caller: str = CALLER) -> dict[str, str]:
    return {"CallSid": sid, "From": caller, "To": to, "CallStatus": "ringing"}


@pytest.fixture
async def routed(make_pinned_agent: AgentFactory) -> dict[str, Any]:
    return await make_pinned_agent(versions=1, pinned=1)


@pytest.mark.parametrize(
    "path", ["/webhooks/twilio/voice", "/webhooks/generic/call", "/webhooks/telnyx"]
)
async def test_oversized_bodies_are_413(router: RouterClient, path: str) -> None:
    resp = await router.post(path, data=b"x" * (1024 * 1024))
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "request_entity_too_large"


async def test_an_oversized_admin_body_is_413(api: Api) -> None:
    big = json.dumps({"config": minimal_config(system_prompt="x" * (3 * 1024 * 1024))})
    resp = await api.call("POST", "/v1/agents", data=io.BytesIO(big.encode()), headers=_json())
    assert resp.status == 413


async def test_malformed_bodies_are_4xx(webhooks: Webhooks, router: RouterClient) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"}
    resp = await router.post("/webhooks/twilio/voice", data=b"\xff\xfe=%%%", headers=headers)
    assert resp.status == 403
    for body in (b"{", b"[1,2]", b'"text"', b'{"call_id": 1}', b"\xff", b"NaN", b"[" * 10000):
        raw = await router.post(
            "/webhooks/generic/call",
            data=body,
            headers={"X-Agentver-Signature": _generic_signature(webhooks, body)},
        )
        assert raw.status == 400, (body[:20], await raw.text())


def _generic_signature(webhooks: Webhooks, body: bytes) -> str:
    assert webhooks.settings.generic_secret
    secret = webhooks.settings.generic_secret.encode()
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


async def test_malformed_telnyx_events_are_400(webhooks: Webhooks) -> None:
    events: list[Any] = [{}, {"data": []}, {"data": {"payload": {"call_control_id": 7}}}, []]
    for event in events:
        resp = await webhooks.telnyx(event)
        assert resp.status == 400, await resp.text()


async def test_hostile_text_and_numbers_get_an_answer(
    webhooks: Webhooks, routed: dict[str, Any]
) -> None:
    for i, text in enumerate(HOSTILE_TEXT):
        for params in (
            _call(f"CA{i}-from", caller=text),
            _call(text or "CA-empty", caller=text),
            _call(f"CA{i}-to", to=text),
        ):
            twiml = await _no_5xx(await webhooks.twilio("/webhooks/twilio/voice", params))
            assert twiml.startswith("<?xml") and "<Response>" in twiml
        resp = await webhooks.generic({"call_id": text or "g", "from": text or "f", "to": CHANNEL})
        await _no_5xx(resp)
        event = telnyx_incoming(f"cc-{i}", to=text, caller=text)
        assert (await webhooks.telnyx(event)).status == 200
    for number in BAD_NUMBERS:
        twiml = await _no_5xx(
            await webhooks.twilio("/webhooks/twilio/voice", _call(f"CA-bad{number}", to=number))
        )
        assert ("<Say>" in twiml) == (normalize_e164(number) != CHANNEL), number


async def test_replayed_and_misdirected_signatures_are_403(
    webhooks: Webhooks, routed: dict[str, Any]
) -> None:
    stale = await webhooks.telnyx(telnyx_incoming("cc-old"), time.time() - 301)
    assert stale.status == 403
    params = _call("CA-elsewhere")
    signed_elsewhere = webhooks.twilio_signature("/webhooks/twilio/status", params)
    resp = await webhooks.twilio("/webhooks/twilio/voice", params, signature=signed_elsewhere)
    assert resp.status == 403


async def test_hostile_admin_input_is_4xx(api: Api, routed: dict[str, Any]) -> None:
    agent_id = routed["id"]
    for text in HOSTILE_TEXT:
        config = minimal_config(name=text or "n", system_prompt=text, welcome_message=text)
        await _no_5xx(await api.call("POST", "/v1/agents", json={"config": config}))
        await _no_5xx(
            await api.call("PATCH", f"/v1/agents/{agent_id}/draft", json={"config": {"name": text}})
        )
        for path in (f"/v1/agents/{text}", f"/v1/channels/{text}", f"/v1/calls?agent_id={text}"):
            await _no_5xx(await api.call("GET", path.replace("#", "%23").replace("?", "?", 1)))
        body = {"variants": [{"label": text, "agent_id": text, "version": 1, "weight": 100}]}
        await _no_5xx(await api.call("PUT", f"/v1/channels/{CHANNEL}", json=body))
    await _no_5xx(await api.call("POST", "/v1/agents", data=b"{", headers=_json()))
    await _no_5xx(await api.call("POST", "/v1/agents", data=b"\xff\xfe", headers=_json()))


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}


async def test_secrets_and_signatures_never_reach_the_logs(
    webhooks: Webhooks, routed: dict[str, Any], router_settings: Settings
) -> None:
    params = _call("CA-logged")
    signature = webhooks.twilio_signature("/webhooks/twilio/voice", params)
    with structlog.testing.capture_logs() as logs:
        await webhooks.twilio("/webhooks/twilio/voice", params)
        await webhooks.twilio("/webhooks/twilio/voice", params, signature="forged")
        await webhooks.twilio("/webhooks/twilio/status", {**params, "CallStatus": "completed"})
        await webhooks.generic({"call_id": "g-1", "from": CALLER, "to": CHANNEL})
        await webhooks.generic({"call_id": "g-2", "from": CALLER, "to": CHANNEL}, "sha256=00")
        await webhooks.telnyx(telnyx_incoming("cc-logged"))
        await webhooks.telnyx(telnyx_incoming("cc-stale"), time.time() - 1000)
    text = json.dumps(logs, default=str)
    assert logs, "nothing was logged: the capture is not working"
    secrets = [
        router_settings.twilio_auth_token,
        router_settings.generic_secret,
        router_settings.telnyx_public_key,
        TELNYX_API_KEY,
        signature,
        "forged",
    ]
    leaked = [s for s in secrets if s and s in text]
    assert leaked == [], leaked

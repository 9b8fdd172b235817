"""The generic provider's signed call-ended webhook: generic calls get their status, end time
and duration as Twilio's and Telnyx's do, once, whatever the delivery order."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import pytest

from tests.conftest import AgentFactory, Api
from tests.router_fixtures import RouterClient, Webhooks, list_calls, metric

ENDED = "/webhooks/generic/ended"


async def test_an_ending_closes_the_call_once(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks, router: RouterClient
) -> None:
    agent = await make_pinned_agent(versions=1, pinned=1)
    await webhooks.generic_call("g-ended")
    ending = {
        "call_id": "g-ended",
        "status": "completed",
        "ended_at": "2026-11-26T04:16:10Z",
        "duration_s": 70,
    }
    assert (await webhooks.generic(ending, path=ENDED)).status == 204
    # A redelivery, or a later different report, changes nothing: an ended call is frozen.
    again = {**ending, "status": "failed", "duration_s": 5}
    assert (await webhooks.generic(again, path=ENDED)).status == 204

    [call] = await list_calls(api)
    assert (call["status"], call["duration_s"]) == ("completed", 70.0)
    assert call["ended_at"].startswith("2026-11-26T04:16:10")
    labels = {"agent_id": agent["id"], "version": "1"}
    assert metric(router, "agentver_call_duration_seconds_count", labels) == 1
    assert metric(router, "agentver_call_duration_seconds_sum", labels) == 70


async def test_without_end_time_and_duration_the_call_ends_now(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks
) -> None:
    await make_pinned_agent()
    await webhooks.generic_call("g-now")
    await asyncio.sleep(0.05)
    assert (
        await webhooks.generic({"call_id": "g-now", "status": "no-answer"}, path=ENDED)
    ).status == 204
    [call] = await list_calls(api)
    assert call["status"] == "no-answer" and call["ended_at"] is not None
    assert 0.05 <= call["duration_s"] < 5


async def test_an_ending_that_overtakes_its_call_is_applied_when_it_lands(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks
) -> None:
    await make_pinned_agent()
    ending = {"call_id": "g-early", "status": "busy", "ended_at": "2026-11-26T04:16:10+01:00"}
    assert (await webhooks.generic(ending, path=ENDED)).status == 204
    await webhooks.generic_call("g-early")
    [call] = await list_calls(api)
    assert call["status"] == "busy"
    assert call["ended_at"].startswith("2026-11-26T03:16:10")


async def test_a_bad_signature_is_403_and_changes_nothing(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks, router: RouterClient
) -> None:
    await make_pinned_agent()
    await webhooks.generic_call("g-forged")
    ending = {"call_id": "g-forged", "status": "completed", "duration_s": 1}
    for signature in ["sha256=" + "0" * 64, "nonsense"]:
        resp = await webhooks.generic(ending, signature=signature, path=ENDED)
        assert resp.status == 403
    [call] = await list_calls(api)
    assert call["ended_at"] is None
    rejected = {"provider": "generic", "reason": "bad_signature"}
    assert metric(router, "agentver_webhooks_rejected_total", rejected) == 2


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"status": "completed"}, "call_id"),
        ({"call_id": "", "status": "completed"}, "call_id"),
        ({"call_id": 7, "status": "completed"}, "call_id"),
        ({"call_id": "g-bad"}, "status"),
        ({"call_id": "g-bad", "status": "ringing"}, "status"),
        ({"call_id": "g-bad", "status": "completed", "ended_at": "yesterday"}, "ended_at"),
        ({"call_id": "g-bad", "status": "completed", "ended_at": 1764130570}, "ended_at"),
        # No offset: which time zone it meant cannot be known.
        (
            {"call_id": "g-bad", "status": "completed", "ended_at": "2026-11-26T04:16:10"},
            "ended_at",
        ),
        ({"call_id": "g-bad", "status": "completed", "duration_s": -1}, "duration_s"),
        ({"call_id": "g-bad", "status": "completed", "duration_s": "70"}, "duration_s"),
        ({"call_id": "g-bad", "status": "completed", "duration_s": True}, "duration_s"),
        ({"call_id": "g-bad", "status": "completed", "duration_s": 1e300}, "duration_s"),
        ({"call_id": "g-bad", "status": "completed", "extra": 1}, "extra"),
        (["g-bad"], "$"),
    ],
)
async def test_a_malformed_ending_is_422_naming_the_field(
    api: Api, make_pinned_agent: AgentFactory, webhooks: Webhooks, body: Any, path: str
) -> None:
    await make_pinned_agent()
    await webhooks.generic_call("g-bad")
    resp = await webhooks.generic(body, path=ENDED)
    error = (await resp.json())["error"]
    assert resp.status == 422, error
    assert error["details"][0]["path"] == path
    [call] = await list_calls(api)
    assert call["ended_at"] is None


async def test_a_signed_body_that_is_not_json_is_400(webhooks: Webhooks) -> None:
    raw = b'{"call_id": "g-1", "status": '
    secret = webhooks.settings.generic_secret
    assert secret
    digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Agentver-Signature": f"sha256={digest}"}
    resp = await webhooks.client.post(ENDED, data=raw, headers=headers)
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "malformed_json"

"""A call named by the provider's own call id: `GET /v1/calls?provider=&provider_call_id=`, and
`twilio:CA…` style ids wherever the admin API takes a call id (read, analysis)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import AgentFactory, Api
from tests.router_fixtures import Webhooks, telnyx_incoming

SID = "CA5f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
# Telnyx's ids hold a colon themselves: only the first one splits provider from id.
CCID = "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg"
ANALYSIS = {"sentiment": "negative", "automated": False, "fields": {}}


@pytest.fixture
async def routed(make_pinned_agent: AgentFactory, webhooks: Webhooks) -> dict[str, str]:
    """The agentver call id of a Twilio call, a Telnyx call and a generic call."""
    await make_pinned_agent(versions=1, pinned=1)
    twilio = (await webhooks.twilio_call(SID))["call_id"]
    assert (await webhooks.telnyx(telnyx_incoming(CCID))).status == 200
    generic = (await webhooks.generic_call("g-ref"))["call_id"]
    return {"twilio": twilio, "generic": generic}


async def _only(api: Api, query: str) -> dict[str, Any]:
    items: list[dict[str, Any]] = (await api.ok("GET", "/v1/calls?" + query))["items"]
    assert len(items) == 1, items
    return items[0]


async def test_the_call_list_finds_a_call_by_its_provider_id(
    api: Api, routed: dict[str, str]
) -> None:
    call = await _only(api, f"provider=twilio&provider_call_id={SID}")
    assert (call["call_id"], call["provider"]) == (routed["twilio"], "twilio")
    telnyx = await _only(api, f"provider=telnyx&provider_call_id={quote(CCID)}")
    assert telnyx["provider_call_id"] == CCID
    assert (await _only(api, "provider=generic"))["call_id"] == routed["generic"]
    # The same provider call id under another provider is another call: none here.
    empty = await api.ok("GET", f"/v1/calls?provider=telnyx&provider_call_id={SID}")
    assert empty["items"] == []


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("provider=vonage", "provider"),
        ("provider=TWILIO", "provider"),
        (f"provider_call_id={SID}", "provider"),
    ],
)
async def test_bad_provider_filters_are_400(api: Api, query: str, path: str) -> None:
    error = (await api.ok("GET", "/v1/calls?" + query, 400))["error"]
    assert error["code"] == "invalid_query"
    assert error["details"][0]["path"] == path


async def test_a_call_is_read_by_either_id(api: Api, routed: dict[str, str]) -> None:
    by_ours = await api.ok("GET", f"/v1/calls/{routed['twilio']}", role="runtime")
    assert await api.ok("GET", f"/v1/calls/twilio:{SID}", role="runtime") == by_ours
    telnyx = await api.ok("GET", "/v1/calls/telnyx:" + quote(CCID, safe=""), role="viewer")
    assert telnyx["provider_call_id"] == CCID
    generic = await api.ok("GET", "/v1/calls/generic:g-ref", role="viewer")
    assert generic["call_id"] == routed["generic"]


async def test_an_analysis_is_posted_with_the_providers_id(
    api: Api, routed: dict[str, str]
) -> None:
    call = await api.ok("POST", f"/v1/calls/twilio:{SID}/analysis", role="runtime", json=ANALYSIS)
    assert call["call_id"] == routed["twilio"]
    assert (call["sentiment"], call["automated"]) == ("negative", False)
    stored = await api.ok("GET", f"/v1/calls/{routed['twilio']}")
    assert stored["analysis"]["posted_by"] == "runtime-user"
    audit = (await api.ok("GET", "/v1/audit?action=call.analysis"))["items"]
    assert audit[0]["before"]["call_id"] == routed["twilio"]


@pytest.mark.parametrize(
    "ref",
    [
        "call_000000000000000000000000",
        f"twilio:{SID}x",
        f"telnyx:{SID}",  # the right id under the wrong provider
        f"TWILIO:{SID}",
        "twilio:",
        ":CA1",
        "vonage:CA1",
        "twilio:' OR '1'='1",
        "twilio:%00",
        "generic:" + "x" * 5000,
        "🚀:☎",
    ],
)
async def test_an_unknown_call_is_404_naming_the_accepted_forms(
    api: Api, routed: dict[str, str], ref: str
) -> None:
    path = "/v1/calls/" + quote(ref, safe=":")
    for method, body in [("GET", None), ("POST", ANALYSIS)]:
        suffix = "/analysis" if method == "POST" else ""
        error = (await api.ok(method, path + suffix, 404, role="editor", json=body))["error"]
        assert error["code"] == "call_not_found"
        assert "twilio:CA" in error["message"] and "agentver call id" in error["message"]
        assert len(error["details"]["accepted_forms"]) == 2
    assert (await api.ok("GET", f"/v1/calls/{routed['twilio']}"))["analysis"] is None


@pytest.mark.parametrize("ref", ["twilio:%00", "call_%00"])
async def test_a_nul_in_a_call_id_is_400(api: Api, ref: str) -> None:
    error = (await api.ok("GET", f"/v1/calls/{ref}", 400))["error"]
    assert error["code"] == "malformed_url"

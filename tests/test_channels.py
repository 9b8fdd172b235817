"""Channels: pins, A/B variants, validation, listing, deletion and their audit trail."""

from __future__ import annotations

import base64
import json
from typing import Any

import asyncpg
import pytest

from tests.conftest import AgentFactory, Api, variant
from tests.router_fixtures import use_draw_salt

NUMBER = "+14155550100"
PATH = f"/v1/channels/{NUMBER}"


async def test_pin_a_number_to_a_version(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent(versions=2)
    channel = await api.ok(
        "PUT", PATH, json={"agent_id": agent["id"], "version": 2}, role="publisher"
    )
    assert channel == {
        "number": NUMBER,
        "sticky": "caller",
        "revision": 1,
        "variants": [variant(agent, "default", 2, 100)],
        "updated_at": channel["updated_at"],
        "updated_by": "publisher-user",
    }
    assert await api.ok("GET", PATH, role="viewer") == channel


async def test_pin_a_number_to_the_draft(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent()
    channel = await api.ok("PUT", PATH, json={"agent_id": agent["id"], "version": None})
    assert channel["variants"] == [variant(agent, "default", None, 100)]


async def test_an_ab_test_with_weights(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent(versions=2)
    variants = [variant(agent, "control", 1, 90), variant(agent, "treatment", 2, 10)]
    channel = await api.ok("PUT", PATH, json={"variants": variants, "sticky": "call"})
    assert channel["variants"] == variants and channel["sticky"] == "call"
    variants[0]["weight"], variants[1]["weight"] = 50, 50
    changed = await api.ok("PUT", PATH, json={"variants": variants})
    assert changed["revision"] == 2 and changed["variants"] == variants
    assert changed["sticky"] == "caller"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"variants": []}, "variants"),
        ({"variants": "a"}, "variants"),
        ({"variants": [{"label": "a", "agent_id": "AGENT", "version": 1}]}, "variants[0].weight"),
        (
            {"variants": [{"label": "a", "agent_id": "AGENT", "version": 1, "weight": -1}]},
            "variants[0].weight",
        ),
        (
            {"variants": [{"label": "a", "agent_id": "AGENT", "version": 1, "weight": 1.5}]},
            "variants[0].weight",
        ),
        (
            {"variants": [{"label": "a", "agent_id": "AGENT", "version": 1, "weight": True}]},
            "variants[0].weight",
        ),
        (
            {"variants": [{"label": "a", "agent_id": "AGENT", "version": 1, "weight": 10**12}]},
            "variants[0].weight",
        ),
        (
            {"variants": [{"label": "a", "agent_id": "AGENT", "version": 1, "weight": 0}]},
            "variants",
        ),
        (
            {
                "variants": [
                    {"label": "a", "agent_id": "AGENT", "version": 1, "weight": 0},
                    {"label": "b", "agent_id": "AGENT", "version": None, "weight": 0},
                ]
            },
            "variants",
        ),
        (
            {
                "variants": [
                    {"label": "same", "agent_id": "AGENT", "version": 1, "weight": 1},
                    {"label": "same", "agent_id": "AGENT", "version": None, "weight": 1},
                ]
            },
            "variants[1].label",
        ),
        (
            {"variants": [{"label": "", "agent_id": "AGENT", "version": 1, "weight": 1}]},
            "variants[0].label",
        ),
        (
            {"variants": [{"label": "a\x00", "agent_id": "AGENT", "version": 1, "weight": 1}]},
            "variants[0].label",
        ),
        (
            {"variants": [{"label": "x" * 65, "agent_id": "AGENT", "version": 1, "weight": 1}]},
            "variants[0].label",
        ),
        (
            {"variants": [{"label": "a", "agent_id": "AGENT", "version": 1, "weight": 1, "x": 1}]},
            "variants[0].x",
        ),
        (
            {"variants": [{"label": "a", "agent_id": "AGENT", "version": 7, "weight": 1}]},
            "variants[0].version",
        ),
        (
            {"variants": [{"label": "a", "agent_id": "AGENT", "version": 0, "weight": 1}]},
            "variants[0].version",
        ),
        (
            {"variants": [{"label": "a", "agent_id": "AGENT", "version": "1", "weight": 1}]},
            "variants[0].version",
        ),
        (
            {"variants": [{"label": "a", "agent_id": "AGENT", "version": 2**40, "weight": 1}]},
            "variants[0].version",
        ),
        (
            {"variants": [{"label": "a", "agent_id": "agt_nope", "version": 1, "weight": 1}]},
            "variants[0].agent_id",
        ),
        (
            {"variants": [{"label": "a", "agent_id": "a\x00b", "version": 1, "weight": 1}]},
            "variants[0].agent_id",
        ),
        ({"agent_id": "AGENT", "version": 2}, "variants[0].version"),
        ({"agent_id": "AGENT", "version": 1, "sticky": "forever"}, "sticky"),
        ({"agent_id": "AGENT", "version": 1, "weight": 3}, "weight"),
        ({"version": 1}, "agent_id"),
    ],
)
async def test_invalid_routing_is_422_naming_the_field(
    api: Api, make_agent: AgentFactory, body: dict[str, Any], path: str
) -> None:
    agent = await make_agent(versions=1)
    # The table names the test's agent "AGENT": it exists only once the test runs.
    sent = json.loads(json.dumps(body).replace('"AGENT"', json.dumps(agent["id"])))
    error = (await api.ok("PUT", PATH, 422, json=sent))["error"]
    assert error["code"] == "invalid_routing"
    assert [d["path"] for d in error["details"]] == [path]
    await api.ok("GET", PATH, 404)  # nothing was written


@pytest.mark.parametrize(
    "number",
    [
        "14155550100",
        "+1 415 555 0100",
        "+0123",
        "+1",
        "+1234567890123456",
        "tel:+14155550100",
        "%2B1415%00",
    ],
)
async def test_numbers_must_be_strict_e164(api: Api, make_agent: AgentFactory, number: str) -> None:
    agent = await make_agent(versions=1)
    put = await api.call(
        "PUT", f"/v1/channels/{number}", json={"agent_id": agent["id"], "version": 1}
    )
    assert put.status in (400, 422)
    get = await api.call("GET", f"/v1/channels/{number}")
    assert get.status in (400, 404, 422)


async def test_labels_keep_unicode_and_sql_intact(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent(versions=1)
    labels = ["café ☕", "'; DROP TABLE channels; --", "50%_off\\"]
    variants = [variant(agent, label, 1, 1) for label in labels]
    channel = await api.ok("PUT", PATH, json={"variants": variants})
    assert [v["label"] for v in channel["variants"]] == labels
    assert (await api.ok("GET", PATH))["variants"] == variants


async def test_delete_a_channel(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent(versions=1)
    await api.ok("PUT", PATH, json={"agent_id": agent["id"], "version": 1})
    await api.ok("DELETE", PATH, 204, role="publisher")
    await api.ok("GET", PATH, 404)
    await api.ok("DELETE", PATH, 404)


async def test_channels_list_by_number_in_pages(api: Api, make_agent: AgentFactory) -> None:
    one, two = await make_agent(versions=1), await make_agent(versions=1)
    numbers = [f"+1415555010{i}" for i in range(5)]
    for i, number in enumerate(numbers):
        owner = one if i % 2 == 0 else two
        await api.ok("PUT", f"/v1/channels/{number}", json={"agent_id": owner["id"], "version": 1})
    seen, path = [], "/v1/channels?limit=2"
    while path:
        page = await api.ok("GET", path, role="viewer")
        seen += [c["number"] for c in page["items"]]
        path = f"/v1/channels?limit=2&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    assert seen == numbers
    mine = await api.ok("GET", f"/v1/channels?agent_id={two['id']}")
    assert [c["number"] for c in mine["items"]] == numbers[1::2]
    forged = base64.urlsafe_b64encode(b'["+1\\u0000"]').decode()
    await api.ok("GET", f"/v1/channels?cursor={forged}", 400)


async def test_pins_and_weight_changes_are_audited(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent(versions=2)
    pin = await api.ok("PUT", PATH, json={"agent_id": agent["id"], "version": 1})
    test = [variant(agent, "a", 1, 50), variant(agent, "b", 2, 50)]
    ab = await api.ok("PUT", PATH, json={"variants": test})
    test[1]["weight"] = 80
    reweighted = await api.ok("PUT", PATH, json={"variants": test})
    await api.ok("DELETE", PATH, 204)
    entries = (await api.ok("GET", "/v1/audit?channel=%2B14155550100"))["items"]
    assert [(e["action"], e["before"], e["after"]) for e in entries] == [
        ("channel.delete", reweighted, None),
        ("channel.weights", ab, reweighted),
        ("channel.variants", pin, ab),
        ("channel.pin", None, pin),
    ]
    assert {e["channel"] for e in entries} == {NUMBER}
    weights = await api.ok("GET", "/v1/audit?action=channel.weights")
    assert [e["after"]["variants"][1]["weight"] for e in weights["items"]] == [80]


async def test_if_match_guards_a_routing_change(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent(versions=2)
    resp = await api.call("PUT", PATH, json={"agent_id": agent["id"], "version": 1})
    assert resp.headers["ETag"] == '"1"'
    await api.ok("PUT", PATH, json={"agent_id": agent["id"], "version": 2})
    # A console that read revision 1 must not overwrite the pin made since.
    stale = await api.call(
        "PUT", PATH, json={"agent_id": agent["id"], "version": 1}, headers={"If-Match": '"1"'}
    )
    assert stale.status == 412
    assert (await stale.json())["error"]["details"] == {"current_revision": 2}
    channel = await api.ok("GET", PATH)
    assert channel["variants"][0]["version"] == 2
    await api.ok(
        "PUT", PATH, json={"agent_id": agent["id"], "version": 1}, headers={"If-Match": '"2"'}
    )


async def test_dry_run_explains_the_draw_and_records_nothing(
    api: Api, make_agent: AgentFactory, pool: asyncpg.Pool
) -> None:
    agent = await make_agent(versions=2)
    variants = [variant(agent, "A", 1, 80), variant(agent, "B", 2, 20)]
    await api.ok("PUT", PATH, json={"variants": variants})
    await use_draw_salt(pool, NUMBER)
    answer = await api.ok("GET", "/v1/resolve?to=%2B14155550100&from=%2B14155559876")
    assert answer["rule"] == "draw"
    # By hand: sha256("hand-checked-salt:+14155559876") starts 39b521f63a2001a3, u 0.225420,
    # below A's 80 of 100.
    assert (answer["variant"], answer["version"]) == ("A", 1)
    assert answer["u"] == 0x39B521F63A2001A3 / 2**64
    unknown = await api.ok("GET", "/v1/resolve?to=%2B19995550100&from=x", role="viewer")
    assert unknown == {
        "to": "+19995550100",
        "from": "x",
        "rule": "fallback",
        "reason": "unknown_number",
    }
    assert await pool.fetchval("SELECT count(*) FROM calls") == 0
    await api.ok("GET", "/v1/resolve?from=x", 400)

"""Agents: create, read, list; and how the API treats malformed, huge and hostile requests."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest

from tests.conftest import AgentFactory, Api, minimal_config

HEX64 = "0123456789abcdef"


def _cursor(key: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


async def test_create_then_read_an_agent(api: Api) -> None:
    resp = await api.call("POST", "/v1/agents", json={"config": minimal_config()}, role="editor")
    created = await resp.json()
    assert resp.status == 201, created
    assert resp.headers["Location"] == f"/v1/agents/{created['id']}"
    assert created["id"].startswith("agt_")
    assert created["name"] == "Support bot"
    assert created["latest_version"] is None
    draft = created["draft"]
    assert draft["revision"] == 1 and draft["updated_by"] == "editor-user"
    assert set(HEX64).issuperset(draft["config_hash"]) and len(draft["config_hash"]) == 64
    assert draft["config"]["turn_taking"]["silence_timeout_ms"] == 800  # defaults filled in
    assert await api.ok("GET", f"/v1/agents/{created['id']}", role="viewer") == created


async def test_name_beside_the_config_names_the_agent(api: Api) -> None:
    body = {"name": "Front desk", "config": minimal_config()}
    agent = await api.ok("POST", "/v1/agents", 201, json=body)
    assert agent["name"] == agent["draft"]["config"]["name"] == "Front desk"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "config"),
        ({"config": "text"}, "$"),
        ({"config": {"name": "x"}}, "llm"),
        ({"name": 7, "config": minimal_config()}, "name"),
    ],
)
async def test_create_refuses_an_invalid_config(api: Api, body: Any, path: str) -> None:
    error = (await api.ok("POST", "/v1/agents", 422, json=body))["error"]
    assert error["code"] == "invalid_config"
    assert path in [d["path"] for d in error["details"]]


async def test_unknown_agent_is_404(api: Api) -> None:
    body = await api.ok("GET", "/v1/agents/agt_0000000000000000", 404)
    assert body == {
        "error": {
            "code": "agent_not_found",
            "message": "no agent agt_0000000000000000",
            "details": None,
        }
    }


async def test_agents_are_listed_newest_first_in_pages(api: Api, make_agent: AgentFactory) -> None:
    made = [await make_agent(name=f"agent {i}") for i in range(5)]
    seen: list[str] = []
    path = "/v1/agents?limit=2"
    while True:
        page = await api.ok("GET", path, role="viewer")
        assert len(page["items"]) <= 2
        seen += [a["id"] for a in page["items"]]
        if page["next_cursor"] is None:
            break
        path = f"/v1/agents?limit=2&cursor={page['next_cursor']}"
    assert seen == [a["id"] for a in reversed(made)]


@pytest.mark.parametrize(
    "cursor",
    [
        "not base64!",
        _cursor(["x", "y"]),  # not a timestamp
        _cursor(["2026-01-01T00:00:00+00:00"]),  # too short
        _cursor(["2026-01-01T00:00:00+00:00", "agt\u0000"]),  # NUL cannot be stored
        _cursor({"a": 1}),  # type: ignore[arg-type]
    ],
)
async def test_a_forged_agents_cursor_is_400(api: Api, cursor: str) -> None:
    body = await api.ok("GET", f"/v1/agents?cursor={cursor}", 400)
    assert body["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "²", "1.5", ""])
async def test_a_bad_limit_is_400(api: Api, limit: str) -> None:
    body = await api.ok("GET", f"/v1/agents?limit={limit}", 400)
    assert body["error"]["details"] == [{"path": "limit", "message": "limit must be 1 to 1000"}]


# --- malformed and oversized bodies ----------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"",
        b'{"config": NaN}',
        b'{"config": {"temperature": Infinity}}',
        b'{"config": {"workflow": {"x": 1e400}}}',
        b'{"config": {"name": "\\ud800"}}',  # a lone surrogate is not text
        b"\xff\xfe",
        ("[" * 65 + "]" * 65).encode(),
        ("[" * 5000 + "]" * 5000).encode(),
    ],
)
async def test_malformed_json_is_400(api: Api, raw: bytes) -> None:
    resp = await api.call(
        "POST", "/v1/agents", data=raw, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "malformed_json"


async def test_a_json_body_that_is_not_an_object_is_400(api: Api) -> None:
    body = await api.ok("POST", "/v1/agents", 400, json=[minimal_config()])
    assert body["error"]["code"] == "malformed_body"


async def test_a_body_that_is_not_json_is_415(api: Api) -> None:
    resp = await api.call(
        "POST", "/v1/agents", data=b"config=1", headers={"Content-Type": "text/plain"}
    )
    assert resp.status == 415


async def test_a_3_mb_body_is_413(api: Api) -> None:
    body = json.dumps({"config": minimal_config(system_prompt="x" * 3_000_000)}).encode()
    headers = {"Content-Type": "application/json"}
    resp = await api.call("POST", "/v1/agents", data=io.BytesIO(body), headers=headers)
    assert resp.status == 413
    error = (await resp.json())["error"]
    assert error["code"] == "request_entity_too_large"


async def test_a_100_kb_prompt_is_accepted(api: Api) -> None:
    prompt = "You answer calls politely. " * 3800
    assert len(prompt) > 100_000
    agent = await api.ok(
        "POST", "/v1/agents", 201, json={"config": minimal_config(system_prompt=prompt)}
    )
    stored = await api.ok("GET", f"/v1/agents/{agent['id']}/draft")
    assert stored["config"]["system_prompt"] == prompt


# --- hostile text ----------------------------------------------------------------------------

STORED_INTACT = [
    "Robert'); DROP TABLE agents;--",
    "50% off _under_ \\ back\\slash $1 $$ ; -- /* */",
    "Zoë 日本語 עברית 😀 \u200b zero-width",
    "tab\tand\nnewline\r",
    '<script>alert(1)</script> & "quotes"',
]


@pytest.mark.parametrize("text", STORED_INTACT)
async def test_hostile_but_valid_text_is_stored_intact(api: Api, text: str) -> None:
    config = minimal_config(name=text, system_prompt=text, welcome_message=text)
    config["tools"] = [{"name": text, "type": "webhook", "parameters": {text: text}}]
    agent = await api.ok("POST", "/v1/agents", 201, json={"config": config})
    stored = (await api.ok("GET", f"/v1/agents/{agent['id']}"))["draft"]["config"]
    assert stored["name"] == stored["system_prompt"] == stored["welcome_message"] == text
    assert stored["tools"][0]["name"] == text
    assert stored["tools"][0]["parameters"] == {text: text}


@pytest.mark.parametrize("text", ["nul\x00byte", "bell\x07", "escape\x1b[31m", "del\x7f"])
async def test_control_characters_in_a_config_are_422(api: Api, text: str) -> None:
    config = minimal_config(system_prompt=text)
    error = (await api.ok("POST", "/v1/agents", 422, json={"config": config}))["error"]
    assert error["details"] == [
        {"path": "system_prompt", "message": "control characters are not allowed"}
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/agents/%00",
        "/v1/agents/agt%00x/draft",
        "/v1/agents/%ED%A0%80",
        "/v1/agents/' OR 1=1 --",
        "/v1/agents/x/versions/%D9%A1",
        "/v1/agents/x/versions/99999999999999999999",
        "/v1/audit?agent_id=%00",
        "/v1/audit?action=%FF%FE",
        "/v1/channels?agent_id=a%00b",
        "/v1/channels/%2B1415555%000100",
    ],
)
async def test_hostile_urls_never_fail_with_5xx(api: Api, path: str) -> None:
    resp = await api.call("GET", path)
    assert resp.status < 500
    assert "error" in await resp.json() or resp.status == 200

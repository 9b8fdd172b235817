"""Bearer tokens and roles: 401 without a valid token, 403 below the endpoint's role, for every
endpoint of the admin API; tokens from the CLI and from AGENTVER_BOOTSTRAP_TOKEN."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from admin.app import create_app
from store.settings import Settings
from store.tokens import ROLES
from tests.conftest import AgentFactory, Api
from tests.openapi_documents import admin_document, admin_endpoints

VIEWER = frozenset({"viewer", "editor", "publisher", "admin"})
EDITOR = VIEWER - {"viewer"}
PUBLISHER = EDITOR - {"editor"}
ADMIN = frozenset({"admin"})
EVERYONE = frozenset({*ROLES, None})
RUNTIME = frozenset({"runtime"})

# Every endpoint of the admin app and the roles it lets in (None: no token at all).
ENDPOINTS: list[tuple[str, str, frozenset[str | None]]] = [
    ("POST", "/v1/agents", EDITOR),
    ("GET", "/v1/agents", VIEWER),
    ("GET", "/v1/agents/{agent_id}", VIEWER),
    ("POST", "/v1/agents/{agent_id}/archive", PUBLISHER),
    ("POST", "/v1/agents/{agent_id}/unarchive", PUBLISHER),
    ("GET", "/v1/agents/{agent_id}/draft", VIEWER),
    ("PUT", "/v1/agents/{agent_id}/draft", EDITOR),
    ("PATCH", "/v1/agents/{agent_id}/draft", EDITOR),
    ("POST", "/v1/agents/{agent_id}/versions", PUBLISHER),
    ("GET", "/v1/agents/{agent_id}/versions", VIEWER),
    ("GET", "/v1/agents/{agent_id}/versions/{n}", VIEWER),
    ("GET", "/v1/agents/{agent_id}/versions/{n}/diff", VIEWER),
    ("POST", "/v1/agents/{agent_id}/versions/{n}/restore", PUBLISHER),
    ("GET", "/v1/channels", VIEWER),
    ("PUT", "/v1/channels/{number}", PUBLISHER),
    ("GET", "/v1/channels/{number}", VIEWER),
    ("DELETE", "/v1/channels/{number}", PUBLISHER),
    ("GET", "/v1/channels/{number}/guardrails", VIEWER),
    ("PUT", "/v1/channels/{number}/guardrails", PUBLISHER),
    ("POST", "/v1/channels/{number}/rollouts", PUBLISHER),
    ("GET", "/v1/channels/{number}/rollouts", VIEWER),
    ("POST", "/v1/channels/{number}/rollouts/{rollout_id}/pause", PUBLISHER),
    ("POST", "/v1/channels/{number}/rollouts/{rollout_id}/resume", PUBLISHER),
    ("POST", "/v1/channels/{number}/rollouts/{rollout_id}/abort", PUBLISHER),
    ("POST", "/v1/channels/{number}/rollouts/{rollout_id}/promote", PUBLISHER),
    ("GET", "/v1/calls", VIEWER),
    ("GET", "/v1/calls/export", VIEWER),
    ("GET", "/v1/calls/{call_id}", VIEWER | RUNTIME),
    ("POST", "/v1/calls/{call_id}/analysis", EDITOR | RUNTIME),
    ("GET", "/v1/analytics/versions", VIEWER),
    ("GET", "/v1/analytics/ab", VIEWER),
    ("GET", "/v1/analytics/timeseries", VIEWER),
    ("GET", "/v1/audit", VIEWER),
    ("POST", "/v1/tokens", ADMIN),
    ("GET", "/v1/tokens", ADMIN),
    ("POST", "/v1/tokens/{token_id}/revoke", ADMIN),
    ("GET", "/v1/whoami", VIEWER | RUNTIME),
    ("GET", "/v1/resolve", VIEWER),
    ("GET", "/metrics", EVERYONE),
    ("GET", "/healthz", EVERYONE),
    ("GET", "/readyz", EVERYONE),
    ("GET", "/openapi.json", EVERYONE),
]
NUMBER = "+14155550100"


def test_the_table_covers_every_endpoint(settings: Settings) -> None:
    assert {(m, p) for m, p, _ in ENDPOINTS} == admin_endpoints(settings)


def test_the_document_names_the_roles_each_endpoint_lets_in(settings: Settings) -> None:
    doc = admin_document(settings)
    for method, template, allowed in ENDPOINTS:
        operation = doc["paths"][template][method.lower()]
        assert (operation["security"] == []) == (None in allowed), (method, template)
        if None in allowed:
            continue
        # The lowest role of each run of allowed roles is the one the document names.
        lowest = {
            r for r in allowed if r and (r == ROLES[0] or ROLES[ROLES.index(r) - 1] not in allowed)
        }
        for role in lowest:
            assert role in operation.get("description", ""), (method, template, role)


@pytest.mark.parametrize(
    ("method", "template", "allowed"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS]
)
async def test_every_role_on_every_endpoint(
    api: Api,
    make_pinned_agent: AgentFactory,
    method: str,
    template: str,
    allowed: frozenset[str | None],
) -> None:
    agent = await make_pinned_agent(versions=1, pinned=1, number=NUMBER)
    path = template.format(
        agent_id=agent["id"],
        n=1,
        number=NUMBER,
        call_id="call_missing",
        token_id=1,
        rollout_id=1,
    )
    query = {"agent_id": agent["id"], "channel": NUMBER} if "analytics" in path else {}
    outcomes = {}
    for role in (None, *ROLES):
        resp = await api.call(method, path, role=role, json={}, params=query)
        outcomes[role] = resp.status
    expected = {
        role: "allowed" if role in allowed else (401 if role is None else 403) for role in outcomes
    }
    seen = {
        role: "allowed" if status not in (401, 403) and status < 500 else status
        for role, status in outcomes.items()
    }
    assert seen == expected, outcomes


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic dXNlcjpwYXNz",
        "Bearer agv_not_a_real_token",
        "Bearer agv_ünïcode",
        "Token agv_x",
    ],
)
async def test_no_or_bad_token_is_401(api: Api, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    resp = await api.call("GET", "/v1/agents", role=None, headers=headers)
    body = await resp.json()
    assert resp.status == 401 and body["error"]["code"] == "unauthorized"


async def test_a_viewer_cannot_publish(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent()
    path = f"/v1/agents/{agent['id']}/versions"
    body = await api.ok("POST", path, 403, json={"name": "v1"}, role="viewer")
    assert body["error"]["code"] == "forbidden"
    assert (await api.ok("GET", path))["items"] == []


async def test_whoami_names_the_principal(api: Api) -> None:
    assert await api.ok("GET", "/v1/whoami", role="editor") == {
        "name": "editor-user",
        "role": "editor",
        "scopes": None,
    }


async def test_an_admin_creates_tokens_over_the_api(api: Api) -> None:
    made = await api.ok("POST", "/v1/tokens", 201, json={"name": "ci", "role": "publisher"})
    assert made["name"] == "ci" and made["role"] == "publisher"
    headers = {"Authorization": f"Bearer {made['token']}"}
    resp = await api.call("GET", "/v1/whoami", role=None, headers=headers)
    assert await resp.json() == {"name": "ci", "role": "publisher", "scopes": None}
    bad = await api.ok("POST", "/v1/tokens", 422, json={"name": "x", "role": "root"})
    assert bad["error"]["details"] == [{"path": "role", "message": "invalid"}]


async def _run_cli(database_url: str, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "admin",
        *args,
        env={**os.environ, "DATABASE_URL": database_url},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_prints_a_new_token_once(api: Api, database_url: str) -> None:
    code, out, err = await _run_cli(
        database_url, "token", "create", "--name", "ops", "--role", "viewer"
    )
    assert code == 0, err
    token = out.strip()
    assert token.startswith("agv_") and "\n" not in token
    resp = await api.call(
        "GET", "/v1/whoami", role=None, headers={"Authorization": f"Bearer {token}"}
    )
    assert await resp.json() == {"name": "ops", "role": "viewer", "scopes": None}
    code, _, err = await _run_cli(database_url, "token", "create", "--name", "x", "--role", "root")
    assert code != 0 and "invalid choice" in err


async def test_the_bootstrap_token_is_an_admin_token(settings: Settings) -> None:
    secret = "bootstrap-secret-for-tests"
    booted = dataclasses.replace(settings, bootstrap_token=secret)
    for _ in range(2):  # a restart with the same token is fine
        client: TestClient[Any, Any] = TestClient(TestServer(create_app(booted)))
        await client.start_server()
        try:
            resp = await client.get("/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
            assert await resp.json() == {"name": "bootstrap", "role": "admin", "scopes": None}
        finally:
            await client.close()


async def test_a_bootstrap_token_no_client_could_send_is_refused(settings: Settings) -> None:
    client: TestClient[Any, Any] = TestClient(
        TestServer(create_app(dataclasses.replace(settings, bootstrap_token=" spaced ")))
    )
    with pytest.raises(ValueError, match="printable ASCII"):
        await client.start_server()
    await client.close()

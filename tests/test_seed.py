"""`python -m admin seed`: the demo agent, its two versions and pinned number, a demo token."""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg

from admin.seed import DEMO_AGENT_NAME, DEMO_NUMBER, DEMO_TOKEN_NAME, report, seed
from tests.conftest import Api


async def test_seed_builds_the_demo_once(api: Api, pool: asyncpg.Pool) -> None:
    first = await seed(pool)
    assert first.created
    agent = await api.ok("GET", f"/v1/agents/{first.agent_id}")
    assert agent["name"] == DEMO_AGENT_NAME and agent["latest_version"] == 2
    history = await api.ok("GET", f"/v1/agents/{first.agent_id}/versions")
    assert [(v["version"], v["author"]) for v in history["items"]] == [(2, "seed"), (1, "seed")]
    diff = await api.ok("GET", f"/v1/agents/{first.agent_id}/versions/1/diff?against=2")
    assert [s["section"] for s in diff["summary"]] == ["prompt", "tools"]
    channel = await api.ok("GET", f"/v1/channels/{DEMO_NUMBER}")
    assert [(v["agent_id"], v["version"]) for v in channel["variants"]] == [(first.agent_id, 2)]

    second = await seed(pool)
    assert not second.created and second.agent_id == first.agent_id
    assert second.token != first.token
    agents = await api.ok("GET", "/v1/agents")
    assert [a["id"] for a in agents["items"]] == [first.agent_id]
    assert (await api.ok("GET", f"/v1/channels/{DEMO_NUMBER}"))["revision"] == 1
    for token in (first.token, second.token):
        headers = {"Authorization": f"Bearer {token}"}
        resp = await api.call("GET", "/v1/whoami", role=None, headers=headers)
        assert await resp.json() == {"name": DEMO_TOKEN_NAME, "role": "admin", "scopes": None}


async def test_the_report_shows_the_token_and_a_curl(pool: asyncpg.Pool) -> None:
    result = await seed(pool)
    text = report(result, "http://127.0.0.1:8081")
    assert result.token in text
    assert (
        f"curl -H 'Authorization: Bearer {result.token}' "
        f"http://127.0.0.1:8081/v1/agents/{result.agent_id}/versions"
    ) in text


async def test_the_seed_command_runs(database_url: str, pool: asyncpg.Pool) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "admin",
        "seed",
        env={**os.environ, "DATABASE_URL": database_url, "AGENTVER_ADMIN_PORT": "9999"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "Bearer agv_" in out.decode() and "http://127.0.0.1:9999/v1/agents/" in out.decode()
    assert await pool.fetchval("SELECT count(*) FROM versions") == 2

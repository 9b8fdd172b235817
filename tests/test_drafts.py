"""The draft: read with an ETag, replace, merge-patch, and optimistic concurrency."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import AgentFactory, Api, minimal_config


def _draft_path(agent: dict[str, Any]) -> str:
    return f"/v1/agents/{agent['id']}/draft"


async def test_the_draft_carries_its_revision_as_etag(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent()
    resp = await api.call("GET", _draft_path(agent), role="viewer")
    draft = await resp.json()
    assert resp.headers["ETag"] == '"1"'
    assert draft == agent["draft"]


async def test_put_replaces_the_config(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent(welcome_message="Hello")
    config = minimal_config(system_prompt="New prompt.")
    resp = await api.call("PUT", _draft_path(agent), json={"config": config}, role="editor")
    draft = await resp.json()
    assert resp.status == 200 and resp.headers["ETag"] == '"2"'
    assert draft["revision"] == 2 and draft["updated_by"] == "editor-user"
    assert draft["config"]["system_prompt"] == "New prompt."
    assert draft["config"]["welcome_message"] == ""  # replaced, not merged
    assert await api.ok("GET", _draft_path(agent)) == draft


async def test_put_accepts_the_draft_resource_it_read(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent()
    draft = await api.ok("GET", _draft_path(agent))
    again = await api.ok("PUT", _draft_path(agent), json=draft)
    assert again["revision"] == 2 and again["config_hash"] == draft["config_hash"]


async def test_patch_is_a_json_merge_patch(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent(
        tools=[{"name": "lookup", "type": "webhook"}], workflow={"start": "a", "nodes": {"a": 1}}
    )
    patch = {
        "config": {
            "welcome_message": "Hi",
            "llm": {"temperature": 0.1},  # nested: merged
            "tools": [],  # arrays: replaced
            "workflow": {"nodes": {"a": None, "b": 2}},  # null deletes
        }
    }
    resp = await api.call(
        "PATCH",
        _draft_path(agent),
        data=json.dumps(patch),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    draft = await resp.json()
    assert resp.status == 200, draft
    config = draft["config"]
    assert config["welcome_message"] == "Hi"
    assert config["llm"] == {**agent["draft"]["config"]["llm"], "temperature": 0.1}
    assert config["tools"] == []
    assert config["workflow"] == {"start": "a", "nodes": {"b": 2}}


async def test_patch_null_on_an_optional_field_restores_its_default(
    api: Api, make_agent: AgentFactory
) -> None:
    agent = await make_agent(welcome_message="Hello", workflow={"start": "a"})
    patch = {"config": {"welcome_message": None, "workflow": None}}
    config = (await api.ok("PATCH", _draft_path(agent), json=patch))["config"]
    assert config["welcome_message"] == "" and config["workflow"] is None


@pytest.mark.parametrize(
    ("patch", "status", "path"),
    [
        ({"config": {"llm": {"temperature": 5}}}, 422, "llm.temperature"),
        ({"config": {"llm": None}}, 422, "llm"),
        ({"config": {"surprise": 1}}, 422, "surprise"),
        ({"config": None}, 422, "config"),
        ({"revision": 9}, 422, "revision"),
    ],
)
async def test_an_invalid_patch_is_422_naming_the_field(
    api: Api, make_agent: AgentFactory, patch: Any, status: int, path: str
) -> None:
    agent = await make_agent()
    error = (await api.ok("PATCH", _draft_path(agent), status, json=patch))["error"]
    assert path in [d["path"] for d in error["details"]]
    assert (await api.ok("GET", _draft_path(agent)))["revision"] == 1  # nothing changed


async def test_a_stale_if_match_is_412(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent()
    patch = {"config": {"welcome_message": "one"}}
    await api.ok("PATCH", _draft_path(agent), json=patch, headers={"If-Match": '"1"'})
    for stale in ['"1"', "1", 'W/"1"', '"²"', "garbage"]:
        body = await api.ok(
            "PATCH", _draft_path(agent), 412, json=patch, headers={"If-Match": stale}
        )
        assert body["error"]["code"] == "revision_conflict"
    put = {"config": minimal_config()}
    await api.ok("PUT", _draft_path(agent), 412, json=put, headers={"If-Match": '"1"'})
    await api.ok("PUT", _draft_path(agent), json=put, headers={"If-Match": '"2"'})
    await api.ok("PUT", _draft_path(agent), json=put, headers={"If-Match": "*"})


async def test_concurrent_patches_with_the_same_if_match_one_wins(
    api: Api, make_agent: AgentFactory
) -> None:
    agent = await make_agent()
    responses = await asyncio.gather(
        *(
            api.call(
                "PATCH",
                _draft_path(agent),
                json={"config": {"welcome_message": f"writer {i}"}},
                headers={"If-Match": '"1"'},
            )
            for i in range(8)
        )
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] + [412] * 7
    [winner] = [await r.json() for r in responses if r.status == 200]
    assert winner["revision"] == 2
    assert await api.ok("GET", _draft_path(agent)) == winner


async def test_drafts_of_unknown_agents_are_404(api: Api) -> None:
    path = "/v1/agents/agt_0000000000000000/draft"
    await api.ok("GET", path, 404)
    await api.ok("PUT", path, 404, json={"config": minimal_config()})
    await api.ok("PATCH", path, 404, json={"config": {}})


async def test_draft_edits_are_audited(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent()
    draft = await api.ok("PATCH", _draft_path(agent), json={"config": {"welcome_message": "x"}})
    [entry] = (await api.ok("GET", "/v1/audit?action=draft.update"))["items"]
    assert entry["before"] == {"revision": 1, "config_hash": agent["draft"]["config_hash"]}
    assert entry["after"] == {"revision": 2, "config_hash": draft["config_hash"]}
    assert entry["actor"] == "admin-user" and entry["agent_id"] == agent["id"]


async def test_concurrent_patches_without_if_match_all_apply_in_turn(
    api: Api, make_agent: AgentFactory
) -> None:
    agent = await make_agent()
    writers = [f"writer {i}" for i in range(8)]
    drafts = await asyncio.gather(
        *(
            api.ok(
                "PATCH", _draft_path(agent), json={"config": {"tools": [{"name": w, "type": "t"}]}}
            )
            for w in writers
        )
    )
    assert sorted(d["revision"] for d in drafts) == list(range(2, 10))
    last = max(drafts, key=lambda d: d["revision"])
    assert await api.ok("GET", _draft_path(agent)) == last

"""Versions: publish, history, one snapshot, diff, restore; numbering and immutability."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import asyncpg
import pytest

from tests.conftest import AgentFactory, Api


def _versions(agent: dict[str, Any]) -> str:
    return f"/v1/agents/{agent['id']}/versions"


async def test_publish_history_diff_restore_round_trip(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent(system_prompt="First prompt.")
    base = _versions(agent)

    resp = await api.call(
        "POST", base, json={"name": "Launch", "description": "first"}, role="publisher"
    )
    v1 = await resp.json()
    assert resp.status == 201 and resp.headers["Location"] == f"{base}/1"
    assert v1 == {
        "agent_id": agent["id"],
        "version": 1,
        "name": "Launch",
        "description": "first",
        "author": "publisher-user",
        "published_at": v1["published_at"],
        "config_hash": agent["draft"]["config_hash"],
        "config": agent["draft"]["config"],
    }
    edited = await api.ok(
        "PATCH", f"/v1/agents/{agent['id']}/draft", json={"config": {"system_prompt": "Second."}}
    )
    v2 = await api.ok("POST", base, 201, json={"name": "Sharper"})
    assert v2["version"] == 2 and v2["description"] == "" and v2["config"] == edited["config"]

    history = await api.ok("GET", base, role="viewer")
    assert history == {
        "draft": {k: v for k, v in edited.items() if k != "config"},
        "items": [
            {k: v for k, v in v2.items() if k != "config"},
            {k: v for k, v in v1.items() if k != "config"},
        ],
        "next_cursor": None,
    }
    assert await api.ok("GET", f"{base}/1", role="viewer") == v1

    diff = await api.ok("GET", f"{base}/1/diff?against=2")
    assert diff == {
        "agent_id": agent["id"],
        "from": {"version": 1},
        "to": {"version": 2},
        "patch": [{"op": "replace", "path": "/system_prompt", "value": "Second."}],
        "summary": [
            {"section": "prompt", "changes": ['system_prompt: "First prompt." → "Second."']}
        ],
    }
    against_draft = await api.ok("GET", f"{base}/1/diff")
    assert against_draft["to"] == {"draft": True, "revision": edited["revision"]}
    assert against_draft["patch"] == diff["patch"]

    restored = await api.ok("POST", f"{base}/1/restore", role="publisher")
    assert restored["revision"] == edited["revision"] + 1
    assert restored["config"] == v1["config"] and restored["config_hash"] == v1["config_hash"]
    assert (await api.ok("GET", f"{base}/1/diff?against=draft"))["patch"] == []
    assert (await api.ok("GET", f"/v1/agents/{agent['id']}"))["latest_version"] == 2
    assert len((await api.ok("GET", base))["items"]) == 2  # restore made no version


async def test_publishing_does_not_change_the_draft(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent()
    path = f"/v1/agents/{agent['id']}/draft"
    before = await api.ok("GET", path)
    await api.ok("POST", _versions(agent), 201, json={"name": "v1"})
    assert await api.ok("GET", path) == before


async def test_concurrent_publishes_number_versions_without_gaps(
    api: Api, make_agent: AgentFactory
) -> None:
    agent = await make_agent()
    body = {"allow_unchanged": True}
    published = await asyncio.gather(
        *(api.ok("POST", _versions(agent), 201, json={**body, "name": f"v{i}"}) for i in range(20))
    )
    assert sorted(v["version"] for v in published) == list(range(1, 21))
    history = await api.ok("GET", _versions(agent) + "?limit=1000")
    assert [v["version"] for v in history["items"]] == list(range(20, 0, -1))


async def test_publish_if_match_names_the_reviewed_draft_revision(
    api: Api, make_agent: AgentFactory
) -> None:
    agent = await make_agent()
    draft = f"/v1/agents/{agent['id']}/draft"
    reviewed = await api.call("GET", draft)
    etag = reviewed.headers["ETag"]
    await api.ok("PATCH", draft, json={"config": {"system_prompt": "Edited after review."}})

    error = (
        await api.ok("POST", _versions(agent), 412, json={"name": "v1"}, headers={"If-Match": etag})
    )["error"]
    assert error["code"] == "revision_conflict"
    assert error["details"] == {"current_revision": 2}
    assert "review it again" in error["message"]
    assert (await api.ok("GET", _versions(agent)))["items"] == []

    published = await api.ok(
        "POST", _versions(agent), 201, json={"name": "v1"}, headers={"If-Match": '"2"'}
    )
    assert published["version"] == 1
    assert published["config"]["system_prompt"] == "Edited after review."
    # Without If-Match, or with `*`, nothing is checked (as before).
    await api.ok("PATCH", draft, json={"config": {"system_prompt": "Third."}})
    await api.ok("POST", _versions(agent), 201, json={"name": "v2"}, headers={"If-Match": "*"})


@pytest.mark.parametrize("etag", ['"x"', '"-1"', "W/", '"99999999999"', '"1"' * 100])
async def test_publish_with_an_if_match_naming_no_revision_is_412(
    api: Api, make_agent: AgentFactory, etag: str
) -> None:
    agent = await make_agent()
    body = await api.ok(
        "POST", _versions(agent), 412, json={"name": "v"}, headers={"If-Match": etag}
    )
    assert body["error"]["code"] == "revision_conflict"
    assert (await api.ok("GET", f"/v1/agents/{agent['id']}"))["latest_version"] is None


async def test_publishing_an_unchanged_draft_is_409_unless_allowed(
    api: Api, make_agent: AgentFactory
) -> None:
    agent = await make_agent(versions=1)
    error = (await api.ok("POST", _versions(agent), 409, json={"name": "again"}))["error"]
    assert error["code"] == "draft_unchanged"
    assert "allow_unchanged" in error["message"]
    v1 = await api.ok("GET", _versions(agent) + "/1")
    assert error["details"] == {"current_revision": 2, "config_hash": v1["config_hash"]}
    assert (await api.ok("GET", f"/v1/agents/{agent['id']}"))["latest_version"] == 1

    again = await api.ok(
        "POST", _versions(agent), 201, json={"name": "again", "allow_unchanged": True}
    )
    assert again["version"] == 2
    # A draft restored to an older version differs from the latest: publishing it is a change.
    await api.ok("PATCH", f"/v1/agents/{agent['id']}/draft", json={"config": {"name": "Other"}})
    await api.ok("POST", _versions(agent), 201, json={"name": "v3"})
    await api.ok("POST", _versions(agent) + "/2/restore")
    await api.ok("POST", _versions(agent), 201, json={"name": "back to v2"})


@pytest.mark.parametrize("flag", ["true", 1, None, [], {"yes": True}])
async def test_allow_unchanged_must_be_a_boolean(
    api: Api, make_agent: AgentFactory, flag: Any
) -> None:
    agent = await make_agent(versions=1)
    body = {"name": "v", "allow_unchanged": flag}
    error = (await api.ok("POST", _versions(agent), 422, json=body))["error"]
    assert error["details"][0]["path"] == "allow_unchanged"


async def test_two_publishes_of_one_reviewed_revision_one_wins(
    api: Api, make_agent: AgentFactory
) -> None:
    agent = await make_agent(versions=1)
    edited = await api.ok(
        "PATCH", f"/v1/agents/{agent['id']}/draft", json={"config": {"system_prompt": "New."}}
    )
    etag = {"If-Match": f'"{edited["revision"]}"'}
    responses = await asyncio.gather(
        *(
            api.call("POST", _versions(agent), json={"name": f"r{i}"}, headers=etag)
            for i in range(2)
        )
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [201, 409]
    assert (await api.ok("GET", f"/v1/agents/{agent['id']}"))["latest_version"] == 2


async def test_history_pages_newest_first(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent(versions=5)
    pages = []
    path = _versions(agent) + "?limit=2"
    while path:
        page = await api.ok("GET", path)
        assert page["draft"]["revision"] == 6  # the draft leads every page
        pages.append([v["version"] for v in page["items"]])
        cursor = page["next_cursor"]
        path = f"{_versions(agent)}?limit=2&cursor={cursor}" if cursor else ""
    assert pages == [[5, 4], [3, 2], [1]]


@pytest.mark.parametrize("key", [["3"], [2**70], [True], [3, 4], "3"])
async def test_a_forged_history_cursor_is_400(api: Api, make_agent: AgentFactory, key: Any) -> None:
    agent = await make_agent(versions=1)
    cursor = base64.urlsafe_b64encode(json.dumps(key).encode()).decode()
    body = await api.ok("GET", f"{_versions(agent)}?cursor={cursor}", 400)
    assert body["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize(
    ("suffix", "status", "code"),
    [
        ("/3", 404, "version_not_found"),
        ("/0", 404, "version_not_found"),
        ("/99999999999", 404, "version_not_found"),
        ("/1/diff?against=7", 404, "version_not_found"),
        ("/1/diff?against=latest", 400, "invalid_query"),
        ("/1/diff?against=%C2%B2", 400, "invalid_query"),
    ],
)
async def test_missing_versions(
    api: Api, make_agent: AgentFactory, suffix: str, status: int, code: str
) -> None:
    agent = await make_agent(versions=1)
    body = await api.ok("GET", _versions(agent) + suffix, status)
    assert body["error"]["code"] == code


async def test_versions_of_unknown_agents_are_404(api: Api) -> None:
    base = "/v1/agents/agt_0000000000000000/versions"
    for method, path in [("GET", base), ("GET", f"{base}/1"), ("POST", f"{base}/1/restore")]:
        assert (await api.ok(method, path, 404))["error"]["code"] == "agent_not_found"
    body = await api.ok("POST", base, 404, json={"name": "v1"})
    assert body["error"]["code"] == "agent_not_found"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 3}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "v", "description": 5}, "description"),
        ({"name": "nul\x00"}, "name"),
    ],
)
async def test_publish_validates_its_body(
    api: Api, make_agent: AgentFactory, body: Any, path: str
) -> None:
    agent = await make_agent()
    error = (await api.ok("POST", _versions(agent), 422, json=body))["error"]
    assert error["details"][0]["path"] == path


@pytest.mark.parametrize(
    "name", ["v1'; DELETE FROM versions; --", "Ünïcødé 🚀", "tab\there", "bell\x07"]
)
async def test_version_names_are_stored_intact(
    api: Api, make_agent: AgentFactory, name: str
) -> None:
    agent = await make_agent()
    await api.ok("POST", _versions(agent), 201, json={"name": name, "description": name})
    version = await api.ok("GET", _versions(agent) + "/1")
    assert version["name"] == version["description"] == name


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE versions SET name = 'changed'",
        "UPDATE versions SET config_hash = config_hash",
        "DELETE FROM versions",
        "TRUNCATE versions CASCADE",
        "TRUNCATE agents CASCADE",
        "UPDATE config_blobs SET config = '{}'",
        "DELETE FROM config_blobs",
    ],
)
async def test_the_database_refuses_to_change_published_versions(
    api: Api, make_agent: AgentFactory, pool: asyncpg.Pool, statement: str
) -> None:
    agent = await make_agent(versions=1)
    with pytest.raises(asyncpg.PostgresError) as caught:
        await pool.execute(statement)
    assert "immutable" in str(caught.value) or isinstance(
        caught.value, asyncpg.ForeignKeyViolationError
    )
    assert (await api.ok("GET", _versions(agent) + "/1"))["name"] == "v1"


async def test_publish_and_restore_are_audited(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent(versions=2)
    restored = await api.ok("POST", _versions(agent) + "/1/restore", role="publisher")
    entries = (await api.ok("GET", f"/v1/audit?agent_id={agent['id']}"))["items"]
    assert [e["action"] for e in entries] == [
        "version.restore",
        "version.publish",
        "draft.update",
        "version.publish",
        "draft.update",
        "agent.create",
    ]
    restore, publish_2 = entries[0], entries[1]
    assert restore["actor"] == "publisher-user"
    assert restore["before"] == {"revision": 3, "config_hash": publish_2["after"]["config_hash"]}
    assert restore["after"] == {
        "revision": 4,
        "config_hash": restored["config_hash"],
        "restored_version": 1,
    }
    assert publish_2["before"] == {"latest_version": 1, "draft_revision": 3}
    assert publish_2["after"] == {
        "version": 2,
        "name": "v2",
        "config_hash": publish_2["after"]["config_hash"],
    }
    assert entries[3]["before"] == {"latest_version": None, "draft_revision": 2}

"""Progressive rollouts against the real Postgres, moved by the scheduler's tick with a clock the
tests control: steps taken as calls and analyses arrive, a guardrail's rollback with its reason,
two schedulers at once, a restart, a manual pin, sticky callers, hostile input."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from admin.app import create_app
from store import rollouts
from store.call_routing import draw
from store.calls import Candidate, record_calls
from store.channels import Variant, find_channel
from store.db import create_pool
from store.draw import live_variants
from store.rollouts import step_variants
from store.settings import Settings
from tests.call_rows import Outcome, insert_calls, new_call
from tests.conftest import AgentFactory, Api, variant
from tests.polling import eventually
from tests.router_fixtures import CHANNEL, RouterClient

ROLLOUTS = f"/v1/channels/{CHANNEL}/rollouts"
HOLD_S = 600
AUTOMATION = {"metric": "automation_rate", "op": "<", "threshold": 0.5, "min_calls": 10}
GOOD, BAD = Outcome(automated=True, sentiment="positive"), Outcome(automated=False)


async def _channel_at_v1(api: Api, make_agent: AgentFactory) -> dict[str, Any]:
    """An agent with versions 1 and 2, CHANNEL pinned to version 1 (sticky by caller)."""
    agent = await make_agent(versions=2)
    await api.ok("PUT", f"/v1/channels/{CHANNEL}", json={"agent_id": agent["id"], "version": 1})
    return agent


async def _start(api: Api, agent: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    body = {
        "target": {"agent_id": agent["id"], "version": 2},
        "steps": [10, 50, 100],
        "hold_s": HOLD_S,
        "min_calls": 10,
        "rules": [AUTOMATION],
        **overrides,
    }
    started: dict[str, Any] = await api.ok("POST", ROLLOUTS, 201, role="publisher", json=body)
    return started


def _at(started: dict[str, Any], seconds: float) -> datetime:
    return datetime.fromisoformat(started["step_started_at"]) + timedelta(seconds=seconds)


async def _target_calls(
    pool: asyncpg.Pool, agent: dict[str, Any], outcomes: list[Outcome], at: datetime
) -> None:
    await insert_calls(pool, agent["id"], 2, outcomes, variant="rollout", started_at=at)


async def _weights(api: Api) -> dict[str, int]:
    channel = await api.ok("GET", f"/v1/channels/{CHANNEL}", role="viewer")
    return {v["label"]: v["weight"] for v in channel["variants"]}


def _kinds(outcomes: list[rollouts.Outcome]) -> list[str]:
    return [o.kind for o in outcomes]


# --- the routing of each step (pure) ----------------------------------------------------------

TARGET = Variant("rollout", "agt_new", 2, 0)


@pytest.mark.parametrize(
    ("start", "share", "expected"),
    [
        ((Variant("default", "agt_old", 1, 100),), 5, [("rollout", 1), ("default", 19)]),
        ((Variant("default", "agt_old", 1, 100),), 50, [("rollout", 1), ("default", 1)]),
        (
            (Variant("a", "agt_old", 1, 90), Variant("b", "agt_old", 2, 10)),
            25,
            [("rollout", 10), ("a", 27), ("b", 3)],
        ),
        (
            (Variant("a", "agt_old", 1, 3), Variant("off", "agt_old", 1, 0)),
            40,
            [("rollout", 2), ("a", 3), ("off", 0)],
        ),
        ((Variant("default", "agt_old", 1, 100),), 100, [("rollout", 100)]),
    ],
)
def test_the_target_comes_first_with_its_exact_share(
    start: tuple[Variant, ...], share: int, expected: list[tuple[str, int]]
) -> None:
    variants = step_variants(start, TARGET, share)
    assert [(v.label, v.weight) for v in variants] == expected
    total = sum(v.weight for v in variants)
    assert variants[0].weight * 100 == share * total


# --- a rollout's life --------------------------------------------------------------------------


async def test_a_rollout_advances_step_by_step_as_analysed_calls_arrive(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent = await _channel_at_v1(api, make_agent)
    started = await _start(api, agent)
    assert (started["state"], started["step"], started["share"]) == ("running", 0, 10)
    assert await _weights(api) == {"rollout": 1, "default": 9}

    # The hold has not passed, then the calls are missing: no step either way.
    assert _kinds(await rollouts.tick(pool, _at(started, HOLD_S - 1))) == [""]
    assert _kinds(await rollouts.tick(pool, _at(started, HOLD_S))) == [""]
    await _target_calls(pool, agent, [GOOD] * 10, _at(started, 5))
    await insert_calls(pool, agent["id"], 1, [GOOD] * 7, started_at=_at(started, 5))
    assert _kinds(await rollouts.tick(pool, _at(started, HOLD_S - 1))) == [""]

    [step] = await rollouts.tick(pool, _at(started, HOLD_S))
    assert (step.kind, step.rollout.step, step.rollout.share) == ("step", 1, 50)
    assert await _weights(api) == {"rollout": 1, "default": 1}
    # The next step's hold counts from the step, and the step's own calls count.
    assert _kinds(await rollouts.tick(pool, _at(started, 2 * HOLD_S))) == [""]

    listing = await api.ok("GET", ROLLOUTS, role="viewer")
    current = listing["current"]
    assert current["progress"]["target"] == {"calls": 10, "analysed": 10}
    assert current["progress"]["baseline"] == {"calls": 7, "analysed": 7}
    assert current["progress"]["step_analysed"] == 0
    assert current["progress"]["calls_needed"] == 10
    assert current["progress"]["guardrails"] == [{**AUTOMATION, "breached": False}]
    assert [(e["kind"], e["share"]) for e in current["events"]] == [("start", 10), ("step", 50)]
    assert current["events"][1]["figures"]["target"] == {"calls": 10, "analysed": 10}

    await _target_calls(pool, agent, [GOOD] * 10, _at(started, HOLD_S + 5))
    [done] = await rollouts.tick(pool, _at(started, 2 * HOLD_S))
    assert (done.kind, done.rollout.state, done.rollout.share) == ("complete", "completed", 100)
    assert await _weights(api) == {"rollout": 100}
    assert await rollouts.tick(pool, _at(started, 5 * HOLD_S)) == []

    listing = await api.ok("GET", ROLLOUTS, role="viewer")
    assert listing["current"] is None
    assert [r["state"] for r in listing["items"]] == ["completed"]
    audit = await api.ok("GET", "/v1/audit", role="viewer", params={"channel": CHANNEL})
    actions = [(e["actor"], e["action"]) for e in audit["items"]]
    assert actions[:3] == [
        ("rollout", "rollout.step"),
        ("rollout", "rollout.step"),
        ("publisher-user", "rollout.start"),
    ]
    last = audit["items"][0]["after"]
    assert last["rollout"]["share"] == 100 and "no guardrail broken" in last["rollout"]["reason"]
    assert last["rollout"]["figures"]["step_analysed"] == 10


async def test_a_bad_target_is_rolled_back_by_its_guardrail_and_the_audit_says_why(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent = await _channel_at_v1(api, make_agent)
    before = await api.ok("GET", f"/v1/channels/{CHANNEL}", role="viewer")
    started = await _start(api, agent)
    # 20 failures in a row: the fewest whose always-valid interval (mSPRT) lies wholly below 0.5.
    await _target_calls(pool, agent, [BAD] * 20, _at(started, 5))

    # Long before the hold is over: a broken guardrail does not wait.
    [rollback] = await rollouts.tick(pool, _at(started, 10))
    assert (rollback.kind, rollback.rollout.state) == ("rollback", "rolled_back")
    assert rollback.trip is not None and rollback.trip.calls == 20
    after = await api.ok("GET", f"/v1/channels/{CHANNEL}", role="viewer")
    assert after["variants"] == before["variants"]
    assert after["revision"] == before["revision"] + 2

    [entry] = (await api.ok("GET", "/v1/audit?action=rollout.rollback", role="viewer"))["items"]
    assert entry["actor"] == "rollout"
    note = entry["after"]["rollout"]
    assert note["reason"].startswith("guardrail broken: automation_rate < 0.5")
    assert note["figures"]["trip"]["observed"] == 0.0
    assert note["figures"]["target"] == {"calls": 20, "analysed": 20}
    assert entry["before"]["variants"][0]["label"] == "rollout"

    listing = await api.ok("GET", ROLLOUTS, role="viewer")
    assert listing["current"] is None
    assert listing["items"][0]["reason"] == note["reason"]
    assert [e["kind"] for e in listing["items"][0]["events"]] == ["start", "rollback"]


async def test_two_schedulers_at_once_never_take_the_same_step_twice(
    api: Api, pool: asyncpg.Pool, database_url: str, make_agent: AgentFactory
) -> None:
    agent = await _channel_at_v1(api, make_agent)
    before = await api.ok("GET", f"/v1/channels/{CHANNEL}", role="viewer")
    started = await _start(api, agent)
    await _target_calls(pool, agent, [GOOD] * 10, _at(started, 5))
    first = await create_pool(database_url)
    second = await create_pool(database_url)
    try:
        now = _at(started, 3 * HOLD_S)
        passes = await asyncio.gather(
            *(rollouts.tick(p, now) for _ in range(5) for p in (first, second))
        )
    finally:
        await first.close()
        await second.close()

    assert sorted(k for p in passes for k in _kinds(p) if k) == ["step"]
    [current] = (await api.ok("GET", ROLLOUTS, role="viewer"))["items"]
    assert [e["kind"] for e in current["events"]] == ["start", "step"]
    assert current["share"] == 50
    after = await api.ok("GET", f"/v1/channels/{CHANNEL}", role="viewer")
    assert after["revision"] == before["revision"] + 2  # the start and one step


async def test_a_restarted_scheduler_resumes_mid_step_and_catches_up_one_step_at_a_time(
    api: Api, database_url: str, make_agent: AgentFactory
) -> None:
    """A new scheduler (a new pool, as after a restart) finds the rollout where it was; after a
    long downtime it takes one step, whose own hold and calls the next one waits for."""
    first = await create_pool(database_url)
    try:
        agent = await _channel_at_v1(api, make_agent)
        started = await _start(api, agent, min_calls=0)
        assert _kinds(await rollouts.tick(first, _at(started, 10))) == [""]
    finally:
        await first.close()

    restarted = await create_pool(database_url)
    try:
        much_later = _at(started, 10 * HOLD_S)
        assert _kinds(await rollouts.tick(restarted, much_later)) == ["step"]
        assert _kinds(await rollouts.tick(restarted, much_later)) == [""]
        assert _kinds(await rollouts.tick(restarted, much_later + timedelta(seconds=HOLD_S))) == [
            "complete"
        ]
    finally:
        await restarted.close()


async def test_a_manual_pin_pauses_the_rollout_and_resume_takes_the_step_back(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent = await _channel_at_v1(api, make_agent)
    started = await _start(api, agent, min_calls=0)
    manual = {"agent_id": agent["id"], "version": 1}
    await api.ok("PUT", f"/v1/channels/{CHANNEL}", role="publisher", json=manual)

    [paused] = await rollouts.tick(pool, _at(started, HOLD_S))
    assert (paused.kind, paused.rollout.state) == ("pause", "paused")
    assert paused.rollout.reason is not None
    assert paused.rollout.reason.startswith("channel changed by publisher-user")
    assert await _weights(api) == {"default": 100}  # the admin's routing stands
    assert await rollouts.tick(pool, _at(started, 3 * HOLD_S)) == []

    rid = started["id"]
    resumed = await api.ok("POST", f"{ROLLOUTS}/{rid}/resume", role="publisher")
    assert (resumed["state"], resumed["share"]) == ("running", 10)
    assert await _weights(api) == {"rollout": 1, "default": 9}
    assert [e["kind"] for e in resumed["events"]] == ["start", "pause", "resume"]
    # The resumed step holds again from the resume.
    assert resumed["step_started_at"] > started["step_started_at"]
    assert _kinds(await rollouts.tick(pool, _at(resumed, HOLD_S - 1))) == [""]
    assert _kinds(await rollouts.tick(pool, _at(resumed, HOLD_S))) == ["step"]


async def test_pause_abort_and_promote_by_an_operator(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent = await _channel_at_v1(api, make_agent)
    started = await _start(api, agent, min_calls=0)
    rid = started["id"]
    paused = await api.ok("POST", f"{ROLLOUTS}/{rid}/pause", role="publisher")
    assert (paused["state"], paused["reason"]) == ("paused", "pause by publisher-user")
    assert await rollouts.tick(pool, _at(started, 5 * HOLD_S)) == []
    await api.ok("POST", f"{ROLLOUTS}/{rid}/pause", 409, role="publisher")

    aborted = await api.ok("POST", f"{ROLLOUTS}/{rid}/abort", role="publisher")
    assert aborted["state"] == "aborted"
    assert await _weights(api) == {"default": 100}
    for action in ("pause", "resume", "abort", "promote"):
        await api.ok("POST", f"{ROLLOUTS}/{rid}/{action}", 409, role="publisher")

    second = await _start(api, agent)
    promoted = await api.ok("POST", f"{ROLLOUTS}/{second['id']}/promote", role="publisher")
    assert (promoted["state"], promoted["share"]) == ("completed", 100)
    assert await _weights(api) == {"rollout": 100}
    [entry] = (await api.ok("GET", "/v1/audit?action=rollout.promote", role="viewer"))["items"]
    assert entry["actor"] == "publisher-user"


async def test_the_dry_run_names_the_rollout_and_step(
    api: Api, make_agent: AgentFactory, router: RouterClient
) -> None:
    """On both services: the admin's from Postgres, the router's through its cache."""
    agent = await _channel_at_v1(api, make_agent)
    started = await _start(api, agent, steps=[50, 100])
    sides = set()
    for i in range(40):
        url = f"/v1/resolve?to=%2B{CHANNEL[1:]}&from=%2B1212555{i:04d}"
        found = await api.ok("GET", url)
        routed = await (await router.get(url, headers=api.bearer("runtime"))).json()
        for dry_run in (found, routed):
            note = dry_run["rollout"]
            assert (note["id"], note["step"], note["share"]) == (started["id"], 0, 50)
            assert note["side"] == ("target" if dry_run["variant"] == "rollout" else "start")
        assert routed["variant"] == found["variant"]
        sides.add(found["rollout"]["side"])
    assert sides == {"target", "start"}


async def test_the_admin_process_scheduler_advances_with_the_real_clock_and_shows_metrics(
    settings: Settings, pool: asyncpg.Pool, make_agent: AgentFactory, api: Api
) -> None:
    agent = await _channel_at_v1(api, make_agent)
    client: TestClient[Any, Any] = TestClient(
        TestServer(create_app(replace(settings, rollout_tick_s=0.05)))
    )
    await client.start_server()
    try:
        await _start(api, agent, steps=[50, 100], hold_s=0, min_calls=0)
        await eventually(lambda: _weights(api), lambda w: w == {"rollout": 100}, within_s=5)
        text = await eventually(
            lambda: _metrics(client),
            lambda t: f'agentver_rollout_state{{channel="{CHANNEL}",state="completed"}} 1.0' in t,
            within_s=5,
        )
        assert f'agentver_rollout_step{{channel="{CHANNEL}"}} 2.0' in text
    finally:
        await client.close()


async def _metrics(client: TestClient[Any, Any]) -> str:
    return await (await client.get("/metrics")).text()


# --- sticky callers ----------------------------------------------------------------------------


async def _candidates(api: Api, variants: tuple[Variant, ...]) -> tuple[Candidate, ...]:
    found = []
    for v in live_variants(variants):
        version = await api.ok("GET", f"/v1/agents/{v.agent_id}/versions/{v.version}")
        found.append(Candidate(v.label, v.agent_id, v.version, None, version["config_hash"]))
    return tuple(found)


async def _everyone_calls(
    api: Api, pool: asyncpg.Pool, callers: list[str], round_: int
) -> dict[str, str]:
    """Each caller calls once, recorded as the router records it; the label each was served."""
    routing = await find_channel(pool, CHANNEL)
    assert routing is not None
    candidates = await _candidates(api, routing.variants)
    calls = [
        new_call(
            f"CA{round_}-{i}", draw(routing, c, f"CA{round_}-{i}").drawn.label, candidates, caller=c
        )
        for i, c in enumerate(callers)
    ]
    recorded = await record_calls(pool, calls)
    return {
        c: r.variant for c, r in zip(callers, recorded, strict=True) if not isinstance(r, Exception)
    }


async def test_callers_who_got_the_target_keep_it_and_a_rollback_sends_everyone_back(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent = await make_agent(versions=3)
    ab = [variant(agent, "a", 1, 50), variant(agent, "b", 2, 50)]
    await api.ok("PUT", f"/v1/channels/{CHANNEL}", json={"variants": ab, "sticky": "caller"})
    callers = [f"+1646555{i:04d}" for i in range(300)]
    before = await _everyone_calls(api, pool, callers, 0)

    started = await _start(
        api,
        agent,
        target={"agent_id": agent["id"], "version": 3},
        steps=[10, 40, 70, 100],
        min_calls=0,
        rules=[{**AUTOMATION, "min_calls": 5}],
    )
    history = [before]
    for step in range(3):
        history.append(await _everyone_calls(api, pool, callers, step + 1))
        share = (10, 40, 70)[step]
        on_target = sum(1 for c in callers if history[-1][c] == "rollout")
        assert abs(on_target / len(callers) - share / 100) < 0.1, (share, on_target)
        if step < 2:
            await rollouts.tick(pool, _at(started, (step + 1) * HOLD_S))

    for earlier, later in itertools.pairwise(history[1:]):
        # Once on the target, always on it; off it, a caller keeps the starting variant.
        for c in callers:
            assert earlier[c] != "rollout" or later[c] == "rollout", c
            assert later[c] == "rollout" or later[c] == before[c], c

    # Enough failures for the always-valid interval to lie below the threshold (see above).
    await insert_calls(
        pool, agent["id"], 3, [BAD] * 20, variant="rollout", started_at=_at(started, 1)
    )
    [rollback] = await rollouts.tick(pool, _at(started, 3 * HOLD_S))
    assert rollback.kind == "rollback"
    after = await _everyone_calls(api, pool, callers, 9)
    assert after == before


# --- hostile input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({}, "target"),
        ({"target": {"agent_id": "agt_x"}, "steps": []}, "steps"),
        ({"target": {"agent_id": "agt_x"}, "steps": [50, 25, 100]}, "steps[1]"),
        ({"target": {"agent_id": "agt_x"}, "steps": [10, 50]}, "steps[1]"),
        ({"target": {"agent_id": "agt_x"}, "steps": [0, 100]}, "steps[0]"),
        ({"target": {"agent_id": "agt_x"}, "steps": [50, 101]}, "steps[1]"),
        ({"target": {"agent_id": "agt_x"}, "steps": ["5", 100]}, "steps[0]"),
        ({"target": {"agent_id": "agt_x"}, "steps": list(range(1, 101))}, "steps"),
        ({"target": {"agent_id": "agt_x"}, "hold_s": -1}, "hold_s"),
        ({"target": {"agent_id": "agt_x"}, "hold_s": 10**12}, "hold_s"),
        ({"target": {"agent_id": "agt_x"}, "min_calls": 1.5}, "min_calls"),
        ({"target": {"agent_id": "agt_x"}, "label": ""}, "label"),
        ({"target": {"agent_id": "agt_x"}, "label": "a\x00b"}, "label"),
        ({"target": {"agent_id": "agt_x", "version": 0}}, "target.version"),
        ({"target": {"agent_id": "agt_x", "verison": 2}}, "target.verison"),
        (
            {"target": {"agent_id": "agt_x"}, "rules": [{"metric": "x", "op": "<"}]},
            "rules[0].metric",
        ),
        (
            {
                "target": {"agent_id": "agt_x"},
                "rules": [{"metric": "automation_rate", "op": "<", "threshold": 2}],
            },
            "rules[0].threshold",
        ),
        ({"target": {"agent_id": "agt_x"}, "surprise": 1}, "surprise"),
        ([1, 2], "$"),
    ],
)
async def test_invalid_rollouts_are_refused_with_a_field_path(
    api: Api, make_agent: AgentFactory, body: Any, path: str
) -> None:
    await _channel_at_v1(api, make_agent)
    error = await api.ok("POST", ROLLOUTS, 422, role="publisher", json=body)
    assert error["error"]["details"][0]["path"] == path, error
    assert (await api.ok("GET", ROLLOUTS, role="viewer"))["items"] == []


async def test_rollouts_the_store_refuses(api: Api, make_agent: AgentFactory) -> None:
    agent = await _channel_at_v1(api, make_agent)
    target = {"agent_id": agent["id"], "version": 2}
    cases: list[tuple[str, Any, int, str]] = [
        (ROLLOUTS, {"target": {**target, "version": 9}}, 422, "target.version"),
        (ROLLOUTS, {"target": {"agent_id": "agt_nobody"}}, 422, "target.agent_id"),
        (ROLLOUTS, {"target": target, "label": "default"}, 422, "label"),
        ("/v1/channels/+14155550999/rollouts", {"target": target}, 404, ""),
        ("/v1/channels/4155550100/rollouts", {"target": target}, 422, "number"),
    ]
    for url, body, status, path in cases:
        error = await api.ok("POST", url.replace("+", "%2B"), status, role="publisher", json=body)
        if path:
            assert error["error"]["details"][0]["path"] == path, error
    await api.ok(
        "POST",
        ROLLOUTS,
        400,
        role="publisher",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    await _start(api, agent)
    # One rollout at a time per channel, even when two are asked for at once.
    both = await asyncio.gather(
        *(api.call("POST", ROLLOUTS, role="publisher", json={"target": target}) for _ in range(2))
    )
    assert [r.status for r in both] == [409, 409]
    for rid in ("0", "x", "99999", "1" * 30, "-1"):
        resp = await api.call("POST", f"{ROLLOUTS}/{rid}/pause", role="publisher")
        assert resp.status == 404, rid
    await api.ok("GET", ROLLOUTS + "?cursor=forged", 400, role="viewer")
    await api.ok("GET", ROLLOUTS + "?limit=0", 400, role="viewer")


async def test_two_rollouts_started_at_once_on_a_channel_make_one(
    api: Api, make_agent: AgentFactory
) -> None:
    agent = await _channel_at_v1(api, make_agent)
    body = {"target": {"agent_id": agent["id"], "version": 2}}
    both = await asyncio.gather(
        *(api.call("POST", ROLLOUTS, role="publisher", json=body) for _ in range(2))
    )
    assert sorted(r.status for r in both) in ([201, 409], [201, 412])
    assert len((await api.ok("GET", ROLLOUTS, role="viewer"))["items"]) == 1

"""Guardrails on a channel's A/B test: configured with validation, evaluated after every
analysis, and zeroing a variant only when it is confidently breaking a rule on enough calls:
its always-valid interval (mSPRT) wholly on the breaking side. How rarely that happens to a
variant that meets its rule, checked after every call, is simulated in test_sequential.py."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from store.analytics import Outcomes
from store.channels import Variant
from store.guardrails import Rule, breach, plan_trips
from tests.call_rows import Outcome, insert_calls
from tests.conftest import AgentFactory, Api, variant

CHANNEL = "+14155550177"
GUARDRAILS = f"/v1/channels/{CHANNEL}/guardrails"
AUTOMATION = {"metric": "automation_rate", "op": "<", "threshold": 0.5, "min_calls": 30}

FAILED, AUTOMATED = Outcome(automated=False, sentiment="negative"), Outcome(automated=True)


async def _ab_test(api: Api, make_agent: AgentFactory, weights: tuple[int, int] = (50, 50)) -> str:
    agent = await make_agent(versions=2)
    variants = [
        variant(agent, "control", 1, weights[0]),
        variant(agent, "treatment", 2, weights[1]),
    ]
    await api.ok("PUT", f"/v1/channels/{CHANNEL}", json={"variants": variants, "sticky": "call"})
    await api.ok("PUT", GUARDRAILS, role="publisher", json={"rules": [AUTOMATION]})
    return str(agent["id"])


async def _seed(
    pool: asyncpg.Pool, agent_id: str, label: str, calls: list[Outcome], pending: int = 1
) -> list[str]:
    """Analysed calls for a variant, plus `pending` unanalysed ones; returns the pending ids."""
    version = 1 if label == "control" else 2
    await insert_calls(pool, agent_id, version, calls, channel=CHANNEL, variant=label)
    return await insert_calls(
        pool, agent_id, version, [Outcome()] * pending, channel=CHANNEL, variant=label
    )


async def _analyse(api: Api, call_id: str, automated: bool) -> None:
    body = {"sentiment": "neutral", "automated": automated}
    await api.ok("POST", f"/v1/calls/{call_id}/analysis", role="runtime", json=body)


async def _weights(api: Api) -> dict[str, int]:
    channel = await api.ok("GET", f"/v1/channels/{CHANNEL}", role="viewer")
    return {v["label"]: v["weight"] for v in channel["variants"]}


async def test_trips_once_min_calls_are_reached_and_not_before(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent_id = await _ab_test(api, make_agent)
    await _seed(pool, agent_id, "control", [AUTOMATED] * 40, pending=0)
    first, second = await _seed(pool, agent_id, "treatment", [FAILED] * 28, pending=2)
    before = await api.ok("GET", f"/v1/channels/{CHANNEL}", role="viewer")

    # 29 failures of 29: clearly below 0.5, but fewer calls than the rule asks for.
    await _analyse(api, first, automated=False)
    assert await _weights(api) == {"control": 50, "treatment": 50}

    await _analyse(api, second, automated=False)
    after = await api.ok("GET", f"/v1/channels/{CHANNEL}", role="viewer")
    assert after["variants"] == [
        before["variants"][0],
        {**before["variants"][1], "weight": 0},
    ]
    assert (after["sticky"], after["revision"]) == ("call", before["revision"] + 1)

    [trip] = (await api.ok("GET", "/v1/audit?action=guardrail.trip", role="viewer"))["items"]
    assert trip["actor"] == "guardrail" and trip["channel"] == CHANNEL
    assert trip["before"]["variants"] == before["variants"]
    note = {
        k: trip["after"][k]
        for k in ("variant", "metric", "op", "threshold", "observed", "calls", "method")
    }
    assert note == {
        "variant": "treatment",
        "metric": "automation_rate",
        "op": "<",
        "threshold": 0.5,
        "observed": 0.0,
        "calls": 30,
        "method": "msprt",
    }
    # Always valid, so wider than the fixed-sample Wilson interval's [0, 0.1135].
    low, high = trip["after"]["ci"]
    assert low == 0.0 and high == pytest.approx(0.2930, abs=1e-4)

    metrics = await (await api.call("GET", "/metrics", role=None)).text()
    assert (
        f'agentver_guardrail_trips_total{{channel="{CHANNEL}",metric="automation_rate"}} 1.0'
        in metrics
    )


async def test_a_worse_looking_variant_keeps_its_weight_until_the_interval_clears(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent_id = await _ab_test(api, make_agent)
    await _seed(pool, agent_id, "control", [AUTOMATED] * 40, pending=0)
    # 16 automated of 35: observed 0.457 < 0.5, but the interval [0.22, 0.72] straddles 0.5.
    pending = await _seed(pool, agent_id, "treatment", [AUTOMATED] * 15 + [FAILED] * 19, pending=30)
    await _analyse(api, pending[0], automated=True)
    assert await _weights(api) == {"control": 50, "treatment": 50}
    # More failures: the interval falls below 0.5 after the 22nd further failure (16 of 57),
    # where a fixed-sample Wilson interval, not valid under repeated looks, fell after the 11th.
    failures = 0
    for call_id in pending[1:]:
        await _analyse(api, call_id, automated=False)
        failures += 1
        if (await _weights(api))["treatment"] == 0:
            break
    assert failures == 22


async def test_the_last_weighted_variant_is_never_zeroed(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent_id = await _ab_test(api, make_agent, weights=(0, 100))
    [pending] = await _seed(pool, agent_id, "treatment", [FAILED] * 40)
    await _analyse(api, pending, automated=False)
    assert await _weights(api) == {"control": 0, "treatment": 100}
    assert (await api.ok("GET", "/v1/audit?action=guardrail.trip", role="viewer"))["items"] == []


async def test_calls_served_before_a_variant_was_repointed_do_not_count(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent_id = await _ab_test(api, make_agent)
    # "treatment" used to serve version 1; those failures say nothing about version 2.
    await insert_calls(pool, agent_id, 1, [FAILED] * 40, channel=CHANNEL, variant="treatment")
    [pending] = await _seed(pool, agent_id, "treatment", [FAILED] * 5)
    await _analyse(api, pending, automated=False)
    assert await _weights(api) == {"control": 50, "treatment": 50}


def _outcomes(**counts: Any) -> Outcomes:
    return Outcomes(**counts)


@pytest.mark.parametrize(
    ("rule", "outcomes", "trips"),
    [
        (Rule("automation_rate", "<", 0.5, 30), _outcomes(analysed=29, automated=0), False),
        (Rule("automation_rate", "<", 0.5, 30), _outcomes(analysed=30, automated=0), True),
        (Rule("automation_rate", "<", 0.5, 30), _outcomes(analysed=100, automated=42), False),
        # 40% of 200 would trip a fixed-sample interval, not yet one valid at every look.
        (Rule("automation_rate", "<", 0.5, 30), _outcomes(analysed=200, automated=80), False),
        (Rule("automation_rate", "<", 0.5, 30), _outcomes(analysed=300, automated=120), True),
        (
            Rule("negative_sentiment_share", ">", 0.3, 30),
            _outcomes(sentiments=100, negative=35),
            False,
        ),
        (
            Rule("negative_sentiment_share", ">", 0.3, 30),
            _outcomes(sentiments=100, negative=45),
            True,
        ),
        (
            Rule("mean_duration_s", ">", 300.0, 30),
            _outcomes(durations=30, duration_mean=320.0, duration_var=10000.0),
            False,
        ),
        (
            Rule("mean_duration_s", ">", 300.0, 30),
            _outcomes(durations=100, duration_mean=320.0, duration_var=2500.0),
            True,
        ),
        (Rule("mean_duration_s", "<", 30.0, 5), _outcomes(durations=1, duration_mean=3.0), False),
        (Rule("automation_rate", "<", 0.5, 1), _outcomes(), False),
    ],
)
def test_breach_needs_min_calls_and_a_confident_interval(
    rule: Rule, outcomes: Outcomes, trips: bool
) -> None:
    assert (breach("b", rule, outcomes) is not None) is trips


def test_plan_trips_keeps_weight_on_the_channel() -> None:
    rule = Rule("automation_rate", "<", 0.5, 30)
    failing = _outcomes(analysed=50, automated=0)
    variants = [Variant("a", "ag", 1, 50), Variant("b", "ag", 2, 50), Variant("c", "ag", 3, 0)]
    trips = plan_trips(variants, {"a": failing, "b": failing, "c": failing}, [rule])
    assert [t.variant for t in trips] == ["a"]


async def test_guardrails_config(api: Api, make_agent: AgentFactory) -> None:
    await api.ok("GET", GUARDRAILS, 404, role="viewer")
    await _ab_test(api, make_agent)
    rules = [
        AUTOMATION,
        {"metric": "negative_sentiment_share", "op": ">", "threshold": 0.3, "min_calls": 50},
        {"metric": "mean_duration_s", "op": ">", "threshold": 600},
    ]
    await api.ok("PUT", GUARDRAILS, 403, role="editor", json={"rules": rules})
    saved = await api.ok("PUT", GUARDRAILS, role="publisher", json={"rules": rules})
    assert saved["rules"][2] == {
        "metric": "mean_duration_s",
        "op": ">",
        "threshold": 600.0,
        "min_calls": 30,
    }
    assert saved["method"] == "msprt"
    assert await api.ok("GET", GUARDRAILS, role="viewer") == saved
    [entry, first] = (await api.ok("GET", "/v1/audit?action=channel.guardrails"))["items"]
    assert (first["before"], first["after"]) == (None, [AUTOMATION])
    assert (entry["before"], entry["after"]) == ([AUTOMATION], saved["rules"])
    assert entry["actor"] == "publisher-user"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ([], "$"),
        ({"rule": []}, "rule"),
        ({"rules": {}}, "rules"),
        ({"rules": ["x"]}, "rules[0]"),
        ({"rules": [{**AUTOMATION, "metric": "csat"}]}, "rules[0].metric"),
        ({"rules": [AUTOMATION, {**AUTOMATION, "op": "<="}]}, "rules[1].op"),
        ({"rules": [{**AUTOMATION, "threshold": 1.5}]}, "rules[0].threshold"),
        ({"rules": [{**AUTOMATION, "threshold": True}]}, "rules[0].threshold"),
        ({"rules": [{**AUTOMATION, "min_calls": 0}]}, "rules[0].min_calls"),
        ({"rules": [{**AUTOMATION, "window": 3}]}, "rules[0].window"),
    ],
)
async def test_guardrails_validation(
    api: Api, make_agent: AgentFactory, body: Any, path: str
) -> None:
    await _ab_test(api, make_agent)
    error = await api.ok("PUT", GUARDRAILS, 422, role="publisher", json=body)
    assert error["error"]["code"] == "invalid_guardrails"
    assert error["error"]["details"][0]["path"] == path

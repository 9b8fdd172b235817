"""GET /v1/analytics/versions and /v1/analytics/ab against numbers computed here, from the
outcomes each test inserted: exact counts and rates, intervals and p-values from scipy."""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import pytest
from scipy import stats as sp

from store.analytics import MIN_SAMPLE_SIZE
from store.rollups import RELATIVE_ERROR
from tests.call_rows import Outcome, insert_calls
from tests.conftest import AgentFactory, Api, variant

AB_CHANNEL = "+14155550199"
OTHER_CHANNEL = "+14155550111"
SENTIMENTS = ("positive", "neutral", "negative")
# The rollups' percentile bound is reached at a bucket's lower edge (1.0 s itself reads 1.04 s);
# the margin is for rounding alone.
PERCENTILE_TOLERANCE = RELATIVE_ERROR + 1e-12


def outcomes(n: int, automated: int, mean_s: float, *, seed: int) -> list[Outcome]:
    """`n` analysed, completed calls, `automated` of them automated, durations around mean_s."""
    rng = random.Random(seed)
    return [
        Outcome(
            automated=i < automated,
            sentiment=rng.choice(SENTIMENTS),
            duration_s=round(max(1.0, rng.gauss(mean_s, 25.0)), 2),
        )
        for i in range(n)
    ]


def expected_outcomes(calls: Sequence[Outcome]) -> dict[str, Any]:
    """The outcome fields of an analytics row, computed without the store; the percentiles,
    read from the rollups' histograms, within their stated error."""
    analysed = [c.automated for c in calls if c.automated is not None]
    sentiments = [c.sentiment for c in calls if c.sentiment is not None]
    durations = [c.duration_s for c in calls if c.duration_s is not None]
    automated = sum(analysed)
    ci = sp.binomtest(automated, len(analysed)).proportion_ci(0.95, method="wilson")
    p50, p90 = np.percentile(durations, [50, 90])
    return {
        "calls": len(calls),
        "completed": sum(c.status == "completed" for c in calls),
        "analysed": len(analysed),
        "duration_s": {
            "mean": statistics.fmean(durations),
            "p50": pytest.approx(p50, rel=PERCENTILE_TOLERANCE),
            "p90": pytest.approx(p90, rel=PERCENTILE_TOLERANCE),
        },
        "sentiment": {s: sentiments.count(s) / len(sentiments) for s in SENTIMENTS},
        "automation_rate": automated / len(analysed),
        "automation_rate_ci": [ci.low, ci.high],
    }


def expected_comparison(
    group: Sequence[Outcome], baseline: Sequence[Outcome], label: int | str, verdict: str
) -> dict[str, Any]:
    rates = [[c.automated for c in calls if c.automated is not None] for calls in (group, baseline)]
    table = [[sum(r), len(r) - sum(r)] for r in rates]
    durations = [
        [c.duration_s for c in calls if c.duration_s is not None] for calls in (group, baseline)
    ]
    return {
        "baseline": label,
        "automation_rate_diff": sum(rates[0]) / len(rates[0]) - sum(rates[1]) / len(rates[1]),
        "automation_rate_p_value": sp.chi2_contingency(table, correction=False).pvalue,
        "mean_duration_diff_s": statistics.fmean(durations[0]) - statistics.fmean(durations[1]),
        "mean_duration_p_value": sp.ttest_ind(*durations, equal_var=False).pvalue,
        "verdict": verdict,
        "min_sample_size": MIN_SAMPLE_SIZE,
    }


def approx(value: Any) -> Any:
    """Compare floats to 1e-9 relative, anywhere inside a JSON value."""
    if isinstance(value, dict):
        return {k: approx(v) for k, v in value.items()}
    if isinstance(value, list):
        return [approx(v) for v in value]
    if isinstance(value, float):
        return pytest.approx(value, rel=1e-9)
    return value


async def _seed_versions(pool: asyncpg.Pool, agent_id: str) -> dict[str, list[Outcome]]:
    """Version 1, version 2 and two draft revisions, plus calls the filters must leave out."""
    v1 = outcomes(40, 20, 150.0, seed=1) + [Outcome(status="failed")] * 2
    v2 = outcomes(60, 48, 120.0, seed=2)
    rev2, rev3 = outcomes(5, 4, 100.0, seed=3), outcomes(6, 1, 90.0, seed=4)
    await insert_calls(pool, agent_id, 1, v1)
    await insert_calls(pool, agent_id, 2, v2[:53])
    await insert_calls(pool, agent_id, 2, v2[53:], channel=OTHER_CHANNEL)
    await insert_calls(pool, agent_id, None, rev2, draft_revision=2)
    await insert_calls(pool, agent_id, None, rev3, draft_revision=3)
    old = datetime.now(UTC) - timedelta(days=3)
    await insert_calls(pool, agent_id, 1, outcomes(10, 0, 500.0, seed=5), started_at=old)
    return {"v1": v1, "v2": v2, "rev2": rev2, "rev3": rev3}


def _window() -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "since": (now - timedelta(days=2)).isoformat(),
        "until": (now + timedelta(days=1)).isoformat(),
    }


async def test_versions_report(api: Api, pool: asyncpg.Pool, make_agent: AgentFactory) -> None:
    agent = await make_agent(versions=2)
    seeded = await _seed_versions(pool, agent["id"])
    v1, v2, draft = seeded["v1"], seeded["v2"], seeded["rev2"] + seeded["rev3"]
    params = {"agent_id": agent["id"], **_window()}
    body = await api.ok("GET", "/v1/analytics/versions", role="viewer", params=params)

    assert body["items"] == approx(
        [
            {"version": 1, **expected_outcomes(v1), "comparison": None},
            {
                "version": 2,
                **expected_outcomes(v2),
                "comparison": expected_comparison(v2, v1, 1, "better"),
            },
            {
                "version": "draft",
                **expected_outcomes(draft),
                "comparison": expected_comparison(draft, v2, 2, "too few calls"),
            },
        ]
    )
    assert body["items"][0]["completed"] == 40 and body["items"][0]["calls"] == 42


async def test_versions_report_filters_split_and_baseline(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent = await make_agent(versions=2)
    seeded = await _seed_versions(pool, agent["id"])
    params = {
        "agent_id": agent["id"],
        **_window(),
        "channel": "+14155550100",
        "split_draft": "true",
        "baseline": "2",
    }
    body = await api.ok("GET", "/v1/analytics/versions", role="viewer", params=params)
    v1, v2 = seeded["v1"], seeded["v2"][:53]
    assert [(r["version"], r.get("draft_revision"), r["calls"]) for r in body["items"]] == [
        (1, None, 42),
        (2, None, 53),
        ("draft", 2, 5),
        ("draft", 3, 6),
    ]
    assert body["items"][0]["comparison"] == approx(expected_comparison(v1, v2, 2, "worse"))
    assert body["items"][1]["comparison"] is None
    assert body["items"][3]["comparison"]["baseline"] == 2
    assert body["items"][3] == approx(
        {
            "version": "draft",
            "draft_revision": 3,
            **expected_outcomes(seeded["rev3"]),
            "comparison": expected_comparison(seeded["rev3"], v2, 2, "too few calls"),
        }
    )

    # Without a window every call counts, the three-day-old ones too.
    body = await api.ok(
        "GET", "/v1/analytics/versions", role="viewer", params={"agent_id": agent["id"]}
    )
    assert [r["calls"] for r in body["items"]] == [52, 60, 11]


async def test_no_clear_difference_and_duration_as_tie_breaker(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent = await make_agent(versions=3)
    base, same, shorter = (
        outcomes(50, 25, 150.0, seed=6),
        outcomes(50, 26, 150.0, seed=7),
        outcomes(50, 25, 60.0, seed=8),
    )
    for version, calls in ((1, base), (2, same), (3, shorter)):
        await insert_calls(pool, agent["id"], version, calls)
    params = {"agent_id": agent["id"], "baseline": "1"}
    body = await api.ok("GET", "/v1/analytics/versions", role="viewer", params=params)
    verdicts = [r["comparison"] and r["comparison"]["verdict"] for r in body["items"]]
    assert verdicts == [None, "no clear difference", "better"]


async def test_ab_report_groups_by_variant(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent = await make_agent(versions=2)
    routing = {"variants": [variant(agent, "control", 1, 70), variant(agent, "treatment", 2, 30)]}
    await api.ok("PUT", f"/v1/channels/{AB_CHANNEL}", json=routing)
    control, treatment = outcomes(80, 40, 140.0, seed=9), outcomes(50, 15, 140.0, seed=10)
    retired = outcomes(3, 3, 10.0, seed=11)
    await insert_calls(pool, agent["id"], 1, control, channel=AB_CHANNEL, variant="control")
    await insert_calls(pool, agent["id"], 2, treatment, channel=AB_CHANNEL, variant="treatment")
    await insert_calls(pool, agent["id"], 1, retired, channel=AB_CHANNEL, variant="legacy")
    body = await api.ok(
        "GET", "/v1/analytics/ab", role="viewer", params={"channel": AB_CHANNEL, **_window()}
    )
    arm = {"agent_id": agent["id"]}
    assert body["items"] == approx(
        [
            {
                "variant": "control",
                **arm,
                "version": 1,
                "weight": 70,
                **expected_outcomes(control),
                "comparison": None,
            },
            {
                "variant": "treatment",
                **arm,
                "version": 2,
                "weight": 30,
                **expected_outcomes(treatment),
                "comparison": expected_comparison(treatment, control, "control", "worse"),
            },
            {
                "variant": "legacy",
                **arm,
                "version": 1,
                "weight": None,
                **expected_outcomes(retired),
                "comparison": expected_comparison(retired, control, "control", "too few calls"),
            },
        ]
    )


async def test_query_errors(api: Api, make_agent: AgentFactory) -> None:
    agent = await make_agent()
    cases = [
        ({}, 400, "agent_id"),
        ({"agent_id": agent["id"], "since": "yesterday"}, 400, "since"),
        ({"agent_id": agent["id"], "since": "2025-01-02", "until": "2025-01-01"}, 400, "until"),
        ({"agent_id": agent["id"], "baseline": "v1"}, 400, "baseline"),
        ({"agent_id": agent["id"], "split_draft": "maybe"}, 400, "split_draft"),
    ]
    for params, status, path in cases:
        body = await api.ok("GET", "/v1/analytics/versions", status, role="viewer", params=params)
        assert body["error"]["details"][0]["path"] == path, params
    await api.ok("GET", "/v1/analytics/versions", 404, role="viewer", params={"agent_id": "nope"})
    await api.ok(
        "GET", "/v1/analytics/versions", 403, role="runtime", params={"agent_id": agent["id"]}
    )
    empty = await api.ok(
        "GET", "/v1/analytics/versions", role="viewer", params={"agent_id": agent["id"]}
    )
    assert empty["items"] == []

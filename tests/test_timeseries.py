"""GET /v1/analytics/timeseries: a series per version, every interval a point, each value
computed here from the calls the test inserted; and hostile query parameters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.call_rows import Outcome, insert_calls
from tests.conftest import AgentFactory, Api

T0 = datetime(2026, 5, 4, 0, 0, tzinfo=UTC)
PATH = "/v1/analytics/timeseries"


async def _seed(pool: asyncpg.Pool, agent_id: str) -> None:
    """Version 1 at 01:xx and 03:xx, the draft at 03:xx, version 2 on the next day."""
    await insert_calls(
        pool,
        agent_id,
        1,
        [Outcome(True, "negative", 10.0), Outcome(False, "positive", 30.0), Outcome()],
        started_at=T0 + timedelta(hours=1, minutes=5),
    )
    await insert_calls(
        pool, agent_id, 1, [Outcome(True, "neutral", 50.0)], started_at=T0 + timedelta(hours=3)
    )
    await insert_calls(
        pool, agent_id, None, [Outcome(status="failed")], started_at=T0 + timedelta(hours=3)
    )
    await insert_calls(
        pool, agent_id, 2, [Outcome(True, "negative", 5.0)], started_at=T0 + timedelta(days=1)
    )


def _points(values: list[tuple[Any, int]], start: datetime, step: timedelta) -> list[Any]:
    return [
        {"t": (start + i * step).isoformat(), "value": value, "calls": calls}
        for i, (value, calls) in enumerate(values)
    ]


async def test_hourly_series_per_version(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent = await make_agent(versions=2)
    await _seed(pool, agent["id"])
    hour = timedelta(hours=1)
    # A window inside hours is widened to them: 00:30 to 04:10 is 00:00 to 05:00.
    params = {
        "agent_id": agent["id"],
        "interval": "hour",
        "since": (T0 + timedelta(minutes=30)).isoformat(),
        "until": (T0 + timedelta(hours=4, minutes=10)).isoformat(),
    }

    def expect(metric: str, v1: list[Any], draft: list[Any]) -> dict[str, Any]:
        calls_v1, calls_draft = [0, 3, 0, 1, 0], [0, 0, 0, 1, 0]
        return {
            "agent_id": agent["id"],
            "metric": metric,
            "interval": "hour",
            "since": T0.isoformat(),
            "until": (T0 + 5 * hour).isoformat(),
            "series": [
                {
                    "version": 1,
                    "draft": False,
                    "label": "v1",
                    "points": _points(list(zip(v1, calls_v1, strict=True)), T0, hour),
                },
                {
                    "version": None,
                    "draft": True,
                    "label": "draft",
                    "points": _points(list(zip(draft, calls_draft, strict=True)), T0, hour),
                },
            ],
        }

    cases: dict[str, tuple[list[Any], list[Any]]] = {
        "calls": ([0, 3, 0, 1, 0], [0, 0, 0, 1, 0]),
        "automation_rate": ([None, 0.5, None, 1.0, None], [None] * 5),
        "mean_duration_s": ([None, 20.0, None, 50.0, None], [None] * 5),
        "negative_sentiment_rate": ([None, 0.5, None, 0.0, None], [None] * 5),
    }
    for metric, (v1, draft) in cases.items():
        body = await api.ok("GET", PATH, role="viewer", params={**params, "metric": metric})
        assert body == expect(metric, v1, draft), metric


async def test_daily_series_and_defaults(
    api: Api, pool: asyncpg.Pool, make_agent: AgentFactory
) -> None:
    agent = await make_agent(versions=2)
    await _seed(pool, agent["id"])
    day = timedelta(days=1)
    params = {
        "agent_id": agent["id"],
        "metric": "calls",
        "since": (T0 + timedelta(hours=5)).isoformat(),
        "until": (T0 + day + timedelta(minutes=1)).isoformat(),
    }
    body = await api.ok("GET", PATH, role="viewer", params=params)
    assert body["interval"] == "day"
    assert (body["since"], body["until"]) == (T0.isoformat(), (T0 + 2 * day).isoformat())
    assert [(s["label"], s["points"]) for s in body["series"]] == [
        ("v1", _points([(4, 4), (0, 0)], T0, day)),
        ("v2", _points([(0, 0), (1, 1)], T0, day)),
        ("draft", _points([(1, 1), (0, 0)], T0, day)),
    ]
    # No window: the 30 days up to now, which hold none of these calls.
    body = await api.ok(
        "GET", PATH, role="viewer", params={"agent_id": agent["id"], "metric": "calls"}
    )
    assert body["series"] == []
    since, until = datetime.fromisoformat(body["since"]), datetime.fromisoformat(body["until"])
    assert until - since == timedelta(days=31) and until > datetime.now(UTC) >= since


@pytest.mark.parametrize(
    ("params", "status", "path"),
    [
        ({"metric": "calls"}, 400, "agent_id"),
        ({"agent_id": "AGENT"}, 400, "metric"),
        ({"agent_id": "AGENT", "metric": "CALLS"}, 400, "metric"),
        ({"agent_id": "AGENT", "metric": "calls' OR 1=1 --"}, 400, "metric"),
        ({"agent_id": "AGENT", "metric": "calls", "interval": "minute"}, 400, "interval"),
        ({"agent_id": "AGENT", "metric": "calls", "interval": ""}, 400, "interval"),
        ({"agent_id": "AGENT", "metric": "calls", "since": "yesterday"}, 400, "since"),
        ({"agent_id": "AGENT", "metric": "calls", "until": "2026-13-01"}, 400, "until"),
        (
            {"agent_id": "AGENT", "metric": "calls", "since": "2026-01-02", "until": "2026-01-01"},
            400,
            "until",
        ),
        (
            {"agent_id": "AGENT", "metric": "calls", "interval": "hour", "since": "2026-01-01"},
            400,
            "since",
        ),
        (
            {"agent_id": "AGENT", "metric": "calls", "since": "0001-01-01", "until": "9999-12-31"},
            400,
            "since",
        ),
        ({"agent_id": "nope", "metric": "calls"}, 404, None),
    ],
)
async def test_hostile_query_parameters(
    api: Api, make_agent: AgentFactory, params: dict[str, str], status: int, path: str | None
) -> None:
    agent = await make_agent()
    sent = {k: v.replace("AGENT", agent["id"]) for k, v in params.items()}
    body = await api.ok("GET", PATH, status, role="viewer", params=sent)
    if path is not None:
        assert body["error"]["details"][0]["path"] == path


async def test_extreme_bounds_stay_in_the_calendar(api: Api, make_agent: AgentFactory) -> None:
    """Bounds at the ends of the calendar are held within the years analytics covers."""
    agent = await make_agent()
    for until in ("0001-01-01T00:00:00", "9999-12-31T23:59:59"):
        params = {"agent_id": agent["id"], "metric": "calls", "until": until}
        body = await api.ok("GET", PATH, role="viewer", params=params)
        assert body["series"] == []
    params = {"agent_id": agent["id"], "since": "0001-01-01", "until": "9999-12-31T23:30:00"}
    body = await api.ok("GET", "/v1/analytics/versions", role="viewer", params=params)
    assert body["window"] == {
        "since": "1970-01-01T00:00:00+00:00",
        "until": "9999-01-01T00:00:00+00:00",
        "rounded_to": "hour",
    }

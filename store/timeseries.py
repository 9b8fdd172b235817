"""One metric of an agent's calls per hour or per day, a series per version, from the rollups."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

import asyncpg

from store import rollups
from store.analytics import ANALYTICS_SETTINGS

Metric = Literal["calls", "automation_rate", "mean_duration_s", "negative_sentiment_rate"]
Interval = Literal["hour", "day"]
METRICS: tuple[str, ...] = get_args(Metric)
INTERVALS: tuple[str, ...] = get_args(Interval)
STEP: dict[str, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
# The window when the query names no `since`: two days of hours, a month of days.
DEFAULT_SPAN: dict[str, timedelta] = {"hour": timedelta(days=2), "day": timedelta(days=30)}
# Points per series at most: a chart shows no more, and it bounds the answer (6 weeks of hours,
# almost 3 years of days).
MAX_POINTS = 1000
DRAFT_LABEL = "draft"

# $4 is the interval's date_trunc field ('hour' or 'day'), in UTC.
SERIES = (
    """
SELECT version, date_trunc($4::text, hour, 'UTC') AS t,
       sum(calls)::bigint AS calls,
       sum(analysed)::bigint AS analysed,
       sum(automated)::bigint AS automated,
       sum(durations)::bigint AS durations,
       sum(duration_sum)::float8 AS duration_sum,
       sum(positive + neutral + negative)::bigint AS sentiments,
       sum(negative)::bigint AS negative
FROM """
    + rollups.of("$1::text", "NULL::text")
    + """ r
WHERE agent_id = $1 AND hour >= $2 AND hour < $3
GROUP BY 1, 2
HAVING sum(calls) > 0
ORDER BY version NULLS LAST, t
"""
)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


# Each metric's value from one point's sums; a rate with nothing to divide by is None.
VALUES: dict[str, Callable[[asyncpg.Record], float | None]] = {
    "calls": lambda r: r["calls"],
    "automation_rate": lambda r: _ratio(r["automated"], r["analysed"]),
    "mean_duration_s": lambda r: r["duration_sum"] / r["durations"] if r["durations"] else None,
    "negative_sentiment_rate": lambda r: _ratio(r["negative"], r["sentiments"]),
}


def window(since: datetime | None, until: datetime, interval: str) -> tuple[datetime, datetime]:
    """[since, until) widened to whole intervals (UTC days for `day`); since defaults to
    DEFAULT_SPAN before until."""
    step = STEP[interval]
    start = since if since is not None else until - DEFAULT_SPAN[interval]
    start, end = rollups.hour_window(start, until)
    if interval == "day":
        start = start.replace(hour=0)
        midnight = end.replace(hour=0)
        end = midnight if midnight == end else midnight + step
    return start, end


def points_in(start: datetime, end: datetime, interval: str) -> int:
    return int((end - start) / STEP[interval])


@dataclass(frozen=True)
class Series:
    version: int | None  # None: the draft, every revision together
    points: list[dict[str, Any]]

    def public(self) -> dict[str, Any]:
        draft = self.version is None
        return {
            "version": self.version,
            "draft": draft,
            "label": DRAFT_LABEL if draft else f"v{self.version}",
            "points": self.points,
        }


async def series(
    pool: asyncpg.Pool, agent_id: str, metric: str, interval: str, start: datetime, end: datetime
) -> list[Series]:
    """`metric` per `interval` in [start, end) (whole intervals, see `window`), a series per
    version with calls in it (versions ascending, then the draft), every interval a point: an
    empty one has 0 calls and the value 0 (calls) or None (a rate or a mean)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(ANALYTICS_SETTINGS)
        rows = await conn.fetch(SERIES, agent_id, start, end, interval)
    by_version: dict[int | None, dict[datetime, asyncpg.Record]] = {}
    for row in rows:
        by_version.setdefault(row["version"], {})[row["t"]] = row
    value, step = VALUES[metric], STEP[interval]
    empty = 0 if metric == "calls" else None
    found = []
    for version, at in by_version.items():
        points = []
        t = start
        while t < end:
            row = at.get(t)
            points.append(
                {
                    "t": t.isoformat(),
                    "value": value(row) if row else empty,
                    "calls": row["calls"] if row else 0,
                }
            )
            t += step
        found.append(Series(version, points))
    return found

"""Settings read from the environment: numbers that size the router are checked at start."""

from __future__ import annotations

import pytest

from store.settings import Settings


def test_one_call_writer_by_default() -> None:
    assert Settings.from_env({}).call_writers == 1


def test_call_writers_for_a_bigger_postgres_host() -> None:
    assert Settings.from_env({"AGENTVER_CALL_WRITERS": "3"}).call_writers == 3


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5", " "])
def test_a_call_writer_count_below_one_or_not_a_number_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="AGENTVER_CALL_WRITERS"):
        Settings.from_env({"AGENTVER_CALL_WRITERS": raw})


def test_calls_are_kept_for_good_unless_a_retention_is_set() -> None:
    assert Settings.from_env({}).call_retention_days is None
    assert Settings.from_env({"AGENTVER_CALL_RETENTION_DAYS": ""}).call_retention_days is None
    kept = Settings.from_env({"AGENTVER_CALL_RETENTION_DAYS": "400"})
    assert kept.call_retention_days == 400


@pytest.mark.parametrize("raw", ["0", "-30", "a year", "1.5", " ", "³"])
def test_a_retention_below_a_day_or_not_a_number_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="AGENTVER_CALL_RETENTION_DAYS"):
        Settings.from_env({"AGENTVER_CALL_RETENTION_DAYS": raw})


def test_durations_default_and_read_in_seconds() -> None:
    assert Settings.from_env({}).metric_series_idle_s == 3600
    read = Settings.from_env(
        {"AGENTVER_METRIC_SERIES_IDLE_S": "0", "AGENTVER_ROLLUP_COMPACT_S": "2.5"}
    )
    assert (read.metric_series_idle_s, read.rollup_compact_s) == (0, 2.5)


@pytest.mark.parametrize(
    "name",
    ["AGENTVER_METRIC_SERIES_IDLE_S", "AGENTVER_ROLLOUT_TICK_S", "AGENTVER_ROLLUP_COMPACT_S"],
)
@pytest.mark.parametrize("raw", ["-1", "nan", "inf", "an hour", " ", "1e400"])
def test_a_duration_below_zero_or_not_a_number_is_refused(name: str, raw: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: raw})

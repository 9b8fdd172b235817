"""The sticky-by-caller rule as one table of cases: the dry run's keep_or_redraw (store/draw.py)
and the record statement in SQL (store/calls.py RECORD_CALLS) each run it, so the two cannot drift
apart."""

from __future__ import annotations

from typing import NamedTuple

import pytest


class StickyCase(NamedTuple):
    remembered: str | None  # the caller's remembered label, if any
    drawn: str  # the fresh draw (always a variant with weight: the draw picks no other)
    weights: dict[str, int]  # the channel's variants, by label
    expected: str  # the label the call is served, and then remembered


STICKY_CASES = [
    pytest.param(StickyCase("a", "b", {"a": 80, "b": 20}, "a"), id="remembered a kept"),
    pytest.param(StickyCase("b", "a", {"a": 80, "b": 20}, "b"), id="remembered b kept"),
    pytest.param(StickyCase("c", "a", {"a": 80, "b": 20}, "a"), id="label gone: the draw"),
    pytest.param(StickyCase("c", "b", {"a": 80, "b": 20}, "b"), id="label gone: the draw b"),
    pytest.param(StickyCase("b", "a", {"a": 80, "b": 0}, "a"), id="no weight left: redraw"),
    pytest.param(StickyCase("b", "a", {"a": 100}, "a"), id="variant removed: redraw"),
    pytest.param(StickyCase(None, "a", {"a": 80, "b": 20}, "a"), id="nothing remembered"),
    pytest.param(StickyCase(None, "b", {"a": 80, "b": 20}, "b"), id="nothing remembered: b"),
]

"""The variant draw: a table of cases, a vector computed by hand, and the split it gives."""

from __future__ import annotations

import pytest

from store.channels import Variant
from store.draw import SCALE, draw_point, draw_u, keep_or_redraw, pick
from tests.sticky_cases import STICKY_CASES, StickyCase

A80 = Variant("a", "agt_a", 1, 80)
B20 = Variant("b", "agt_b", None, 20)


def test_hand_computed_vector() -> None:
    # printf 'salt-1:+12125550123' | sha256sum → 76bd43024d55cc03...; 0x76bd43024d55cc03 =
    # 8556068544240274435, / 2^64 = 0.4638254...
    assert draw_point("salt-1", "+12125550123") == 8556068544240274435
    assert draw_u("salt-1", "+12125550123") == pytest.approx(0.4638254, abs=1e-7)
    assert pick([A80, B20], draw_point("salt-1", "+12125550123")) is A80
    # With 40/60 the same caller (u = 0.4638) falls past the first boundary.
    assert (
        pick([Variant("a", "x", 1, 40), Variant("b", "x", 2, 60)], 8556068544240274435).label == "b"
    )


@pytest.mark.parametrize(
    ("weights", "u_point", "expected"),
    [
        ([1, 1], SCALE // 2 - 1, "v0"),  # just below the boundary
        ([1, 1], SCALE // 2, "v1"),  # exactly on it: the next variant
        ([0, 5], 0, "v1"),  # no weight, never picked
        ([5, 0], SCALE - 1, "v0"),
        ([80, 20], SCALE * 4 // 5 - 1, "v0"),
        ([80, 20], SCALE * 4 // 5 + 1, "v1"),
        ([1, 0, 1], SCALE // 2, "v2"),
        ([3], SCALE - 1, "v0"),
    ],
)
def test_pick_walks_cumulative_weights(weights: list[int], u_point: int, expected: str) -> None:
    variants = [Variant(f"v{i}", "agt", None, w) for i, w in enumerate(weights)]
    assert pick(variants, u_point).label == expected


def test_pick_refuses_no_weight() -> None:
    with pytest.raises(ValueError):
        pick([Variant("a", "agt", 1, 0)], 0)


def test_draw_depends_on_salt_and_key_only() -> None:
    assert draw_point("s", "k") == draw_point("s", "k")
    assert draw_point("s", "k") != draw_point("t", "k")
    assert draw_point("s", "k") != draw_point("s", "k2")
    assert 0 <= draw_u("s", "k") < 1


def test_eighty_twenty_split_over_many_callers() -> None:
    callers = [f"+1212555{n:04d}" for n in range(4000)]
    share = sum(pick([A80, B20], draw_point("salt", c)) is A80 for c in callers) / len(callers)
    # Binomial sd = sqrt(0.8 * 0.2 / 4000) = 0.0063; four sd of tolerance.
    assert share == pytest.approx(0.8, abs=0.026)


@pytest.mark.parametrize("case", STICKY_CASES)
def test_keep_or_redraw(case: StickyCase) -> None:
    variants = [Variant(label, f"agt_{label}", 1, w) for label, w in case.weights.items()]
    drawn = next(v for v in variants if v.label == case.drawn)
    assert keep_or_redraw(case.remembered, drawn, variants).label == case.expected

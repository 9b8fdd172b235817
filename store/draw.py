"""The variant draw (docs/design.md section 4, step 3): pure, deterministic, the same on every
worker.

u = the first 8 bytes of sha256(salt + ":" + key) as a big-endian unsigned integer / 2^64; the
variant is the first whose cumulative weight exceeds u x total weight. Comparisons are done on
integers so no float rounding can move a caller across a boundary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from store.channels import Variant

HASH_BYTES = 8
SCALE = 1 << (8 * HASH_BYTES)


def draw_point(salt: str, key: str) -> int:
    """The draw as an integer h in [0, 2^64); u = h / 2^64."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:HASH_BYTES], "big")


def draw_u(salt: str, key: str) -> float:
    """The draw as a number u in [0, 1)."""
    return draw_point(salt, key) / SCALE


def pick(variants: Sequence[Variant], point: int) -> Variant:
    """The variant the draw `point` lands on; variants without weight are never picked."""
    total = sum(v.weight for v in variants)
    if total <= 0:
        raise ValueError("no variant has weight")
    cumulative = 0
    for variant in variants:
        cumulative += variant.weight
        # u < cumulative / total, in integers.
        if variant.weight and point * total < cumulative * SCALE:
            return variant
    raise AssertionError("unreachable: point < 2^64")


def live_variants(variants: Sequence[Variant]) -> list[Variant]:
    """The variants a call may be served from: those with weight."""
    return [v for v in variants if v.weight > 0]


def keep_or_redraw(remembered: str | None, drawn: Variant, variants: Sequence[Variant]) -> Variant:
    """Sticky by caller: the remembered variant while it is live (present, weight > 0), else
    the fresh draw. RECORD_CALLS (store/calls.py) applies the same rule atomically in SQL, to
    the live variants it is given; tests/sticky_cases.py holds the cases both must pass."""
    for variant in variants:
        if variant.label == remembered and variant.weight > 0:
            return variant
    return drawn

"""Dialled and calling numbers to E.164: what providers send passes as is, the rest is cleaned
up or refused."""

from __future__ import annotations

import pytest

from store.numbers import normalize_e164


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("+14155550100", "+14155550100"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("+1.415.555.0100", "+14155550100"),
        ("+14155550100\n", "+14155550100"),  # `$` would match before the newline: not kept
        (" +14155550100", "+14155550100"),
        ("tel:+14155550100", "+14155550100"),
        ("0014155550100", "+14155550100"),
        ("4155550100", None),  # no country code: not guessed
        ("+0123", None),
        ("+1415555010012345", None),  # 16 digits
        ("+" + "1" * 70, None),
        ("anonymous", None),
    ],
)
def test_numbers_normalise_to_e164(raw: str, number: str | None) -> None:
    assert normalize_e164(raw) == number

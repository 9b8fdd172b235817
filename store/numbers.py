"""Phone numbers in E.164."""

from __future__ import annotations

import re

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
# Punctuation people and providers put inside numbers: "+1 (415) 555-0100", "+1.415.555.0100".
_SEPARATORS = re.compile(r"[\s().\-]")
MAX_RAW_LENGTH = 64


def normalize_e164(raw: str) -> str | None:
    """The E.164 form of a dialled number, or None when it cannot be one.

    Accepts separators, a `tel:` prefix and the international `00` prefix; a number without
    a country code is refused rather than guessed.
    """
    if len(raw) > MAX_RAW_LENGTH:
        return None
    # What providers send: already E.164, nothing to take out (a third of the cost of a call's
    # draw went to the substitutions below).
    if E164.fullmatch(raw):
        return raw
    number = _SEPARATORS.sub("", raw.strip())
    if number.lower().startswith("tel:"):
        number = number[4:]
    if number.startswith("00"):
        number = "+" + number[2:]
    return number if E164.match(number) else None

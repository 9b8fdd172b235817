"""Request documents checked by pydantic models, every problem reported as `{"path", "message"}`."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from store.errors import InvalidConfig, StoreError

M = TypeVar("M", bound=BaseModel)

# NUL cannot be stored in Postgres text or jsonb, so no stored string may hold one.
NUL = "\x00"
CONTROL_MESSAGE = "control characters are not allowed"


class InvalidRequest(InvalidConfig):
    """A request body (other than a configuration) breaks its schema; details list paths."""

    code = "invalid_request"


def error_path(loc: tuple[int | str, ...]) -> str:
    """`("variants", 0, "version")` → `variants[0].version`; the document itself is `$`."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "$"


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """One `{"path", "message"}` per problem, unknown fields first: a misspelt field usually
    explains the required one reported missing beside it."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    errors.sort(key=lambda err: err["type"] != "extra_forbidden")
    return [{"path": error_path(err["loc"]), "message": err["msg"]} for err in errors]


def control_character_paths(value: Any, pattern: re.Pattern[str], path: str = "") -> list[str]:
    """Paths of every string (key or value) in a JSON document that `pattern` finds in."""
    if isinstance(value, str):
        return [path or "$"] if pattern.search(value) else []
    if isinstance(value, dict):
        found = []
        for k, v in value.items():
            child = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and pattern.search(k):
                found.append(child)
            found.extend(control_character_paths(v, pattern, child))
        return found
    if isinstance(value, list):
        return [
            p
            for i, v in enumerate(value)
            for p in control_character_paths(v, pattern, f"{path}[{i}]")
        ]
    return []


def no_nul(value: str) -> str:
    """A pydantic after-validator for text that will be stored."""
    if NUL in value:
        raise PydanticCustomError("control_character", CONTROL_MESSAGE)
    return value


def parse(model: type[M], raw: Any, error: type[StoreError], message: str) -> M:
    """`raw` validated by `model`; `error(message, details)` naming every problem's path."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(message, field_errors(exc)) from None

"""Agent configuration: validation with field paths, defaults filled in, canonical hashing."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from store.errors import InvalidConfig
from store.validation import CONTROL_MESSAGE, control_character_paths, parse

# A 100 KB prompt is ordinary; a multi-megabyte one is a mistake or an attack.
MAX_PROMPT_CHARS = 200_000
MAX_TEXT_CHARS = 10_000
MAX_NAME_CHARS = 200
MAX_LIST_ITEMS = 200

# NUL cannot be stored in Postgres jsonb; other C0 controls (bar tab, CR, LF) never belong in
# a configuration and would corrupt logs and TwiML.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

T = TypeVar("T")

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Open(BaseModel):
    """Sections whose contract ends with `...`: known fields are checked, others are kept."""

    model_config = ConfigDict(extra="allow", strict=True)


class Llm(_Strict):
    provider: Name
    model: Name
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, ge=1, le=1_000_000)


class Voice(_Strict):
    tts_provider: Name
    tts_voice: Name
    stt_provider: Name = "deepgram"
    language: Name = "en-US"


class Vad(_Open):
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    min_speech_ms: int = Field(default=250, ge=0)


class Interruption(_Open):
    enabled: bool = True
    min_words: int = Field(default=2, ge=0)


class TurnTaking(_Open):
    vad: Vad = Field(default_factory=Vad)
    interruption: Interruption = Field(default_factory=Interruption)
    silence_timeout_ms: int = Field(default=800, ge=0, le=600_000)
    inactivity_timeout_ms: int = Field(default=30_000, ge=0, le=3_600_000)


class BackgroundSound(_Strict):
    enabled: bool = False
    sound: Name | None = None
    volume: float = Field(default=0.5, ge=0.0, le=1.0)


class KnowledgeBase(_Strict):
    id: Name
    retrieval: dict[str, Any] = Field(default_factory=dict)


class Tool(_Open):
    name: Name
    type: Name
    description: Text = ""
    parameters: dict[str, Any] = Field(default_factory=dict)


AnalysisFieldType = Literal["string", "number", "integer", "boolean"]


class AnalysisField(_Strict):
    name: Name
    type: AnalysisFieldType
    description: Text = ""


class CallAnalysis(_Strict):
    prompt: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)] = ""
    fields: Annotated[list[AnalysisField], Field(max_length=MAX_LIST_ITEMS)] = Field(
        default_factory=list
    )

    @field_validator("fields")
    @classmethod
    def _unique_names(cls, fields: list[AnalysisField]) -> list[AnalysisField]:
        return _unique(fields, lambda f: f.name, "analysis field name")


class AgentConfig(_Strict):
    name: Name
    system_prompt: Annotated[str, Field(max_length=MAX_PROMPT_CHARS)]
    welcome_message: Text = ""
    llm: Llm
    voice: Voice
    turn_taking: TurnTaking = Field(default_factory=TurnTaking)
    background_sound: BackgroundSound = Field(default_factory=BackgroundSound)
    knowledge_bases: Annotated[list[KnowledgeBase], Field(max_length=MAX_LIST_ITEMS)] = Field(
        default_factory=list
    )
    tools: Annotated[list[Tool], Field(max_length=MAX_LIST_ITEMS)] = Field(default_factory=list)
    call_analysis: CallAnalysis = Field(default_factory=CallAnalysis)
    workflow: dict[str, Any] | None = None

    @field_validator("knowledge_bases")
    @classmethod
    def _unique_kbs(cls, kbs: list[KnowledgeBase]) -> list[KnowledgeBase]:
        return _unique(kbs, lambda kb: kb.id, "knowledge base id")

    @field_validator("tools")
    @classmethod
    def _unique_tools(cls, tools: list[Tool]) -> list[Tool]:
        return _unique(tools, lambda t: t.name, "tool name")


def _unique(items: list[T], key: Callable[[T], str], what: str) -> list[T]:
    seen: set[str] = set()
    for item in items:
        k = key(item)
        if k in seen:
            raise ValueError(f"duplicate {what} {k!r}")
        seen.add(k)
    return items


def validate_config(raw: Any) -> dict[str, Any]:
    """Validate a configuration and return it with every default filled in.

    Raises InvalidConfig whose details are `[{"path", "message"}]`, one per problem.
    """
    if not isinstance(raw, dict):
        raise InvalidConfig(
            "config must be a JSON object", [{"path": "$", "message": "expected an object"}]
        )
    bad = control_character_paths(raw, _CONTROL)
    if bad:
        raise InvalidConfig(
            "config contains control characters",
            [{"path": p, "message": CONTROL_MESSAGE} for p in bad],
        )
    return parse(AgentConfig, raw, InvalidConfig, "config is invalid").model_dump(mode="json")


def canonical_json(config: dict[str, Any]) -> bytes:
    """The one byte form of a configuration that its hash is taken over."""
    return json.dumps(
        config, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON: equal configurations hash equally."""
    return hashlib.sha256(canonical_json(config)).hexdigest()

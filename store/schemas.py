"""Every request body the two services accept, as pydantic models: one description that both
validates the body and documents it (OpenAPI is generated from these, examples included), and
the resolution dry run both services answer with.

Limits and enums come from the modules that own them; checks that need the database (a pinned
version exists, analysis fields match the served config) stay in those modules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainValidator,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from store import channels, guardrails, rollouts, tokens
from store.config import MAX_NAME_CHARS, MAX_TEXT_CHARS, AgentConfig, Name
from store.errors import InvalidConfig, InvalidRouting
from store.guardrails import InvalidGuardrails
from store.tokens import Role
from store.validation import InvalidRequest, no_nul, parse

Sentiment = Literal["positive", "neutral", "negative"]
MAX_VERSION_NAME_CHARS = MAX_NAME_CHARS
MAX_DESCRIPTION_CHARS = MAX_TEXT_CHARS
EXAMPLE_NUMBER = "+14155550100"
EXAMPLE_AGENT = "agt_0123456789abcdef"


class Body(BaseModel):
    """A closed request body: an unknown field is named as such, types are never coerced."""

    model_config = ConfigDict(extra="forbid", strict=True)


class OpenBody(BaseModel):
    """A request body whose unknown fields are ignored, as they always were."""

    model_config = ConfigDict(extra="ignore", strict=True)


def _printable(value: str) -> str:
    if not value.isprintable():
        raise PydanticCustomError("printable", "must be printable characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be blank")
    return value


def _invalid_role(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # The one message clients have always been given for a role, whatever is wrong with it.
    try:
        return handler(value)
    except ValueError:
        raise PydanticCustomError("invalid", "invalid") from None


Printable = Annotated[str, AfterValidator(_printable)]
Label = Annotated[Printable, Field(min_length=1, max_length=channels.MAX_LABEL_CHARS)]
AgentId = Annotated[
    Printable, Field(min_length=1, max_length=channels.MAX_AGENT_ID_CHARS, examples=[EXAMPLE_AGENT])
]
VersionNumber = Annotated[int, Field(ge=1, le=channels.MAX_VERSION)]
StoredText = Annotated[str, AfterValidator(no_nul)]
RequiredText = Annotated[
    StoredText,
    Field(min_length=1, max_length=MAX_VERSION_NAME_CHARS),
    AfterValidator(_not_blank),
]


def _unchanged(value: Any) -> Any:
    return value


def checked_later(shape: Any) -> PlainValidator:
    """Accept any value here and document it as `shape`: a validation further in checks it."""
    return PlainValidator(_unchanged, json_schema_input_type=shape)


def _no_documented_default(schema: dict[str, JsonValue]) -> None:
    # The None that stands for "absent" is no value a client may send.
    schema.pop("default", None)


# Checked by `validate_config`, so that its error paths are relative to the config.
ConfigDocument = Annotated[Any, checked_later(AgentConfig)]


# --- agents and drafts -----------------------------------------------------------------------

EXAMPLE_CONFIG: dict[str, JsonValue] = {
    "name": "Front desk",
    "system_prompt": "You answer calls for a dental practice.",
    "llm": {"provider": "openai", "model": "gpt-4o-mini"},
    "voice": {"tts_provider": "elevenlabs", "tts_voice": "rachel"},
}


class CreateAgent(OpenBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"config": EXAMPLE_CONFIG}]})

    config: ConfigDocument
    # Merged into the config before it is validated, and checked there as config.name.
    name: Annotated[Any, checked_later(Name)] = Field(
        None, description="sets config.name", json_schema_extra=_no_documented_default
    )


class PutDraft(OpenBody):
    """Read-only fields of the draft resource (revision, ...) are ignored."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"config": EXAMPLE_CONFIG}]})

    config: ConfigDocument


class PatchDraft(Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"config": {"llm": {"temperature": 0.2}}}]}
    )

    config: dict[str, Any] = Field(
        default_factory=dict, description="RFC 7396 merge patch of the configuration"
    )


class Publish(OpenBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "v2", "description": "Shorter greeting"}]}
    )

    name: RequiredText
    description: Annotated[StoredText, Field(max_length=MAX_DESCRIPTION_CHARS)] | None = None
    allow_unchanged: bool = Field(
        default=False,
        description="publish even when the draft is identical to the latest version (else 409)",
    )


# --- channels --------------------------------------------------------------------------------


class Variant(Body):
    label: Label
    agent_id: AgentId
    version: VersionNumber | None = Field(default=None, description="null serves the draft")
    weight: Annotated[int, Field(ge=0, le=channels.MAX_WEIGHT)]


class Pin(Body):
    """The shorthand: one variant taking all the calls."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"agent_id": EXAMPLE_AGENT, "version": 1}]}
    )

    agent_id: AgentId
    version: VersionNumber | None = Field(default=None, description="null serves the draft")
    sticky: channels.Sticky = "caller"


class Variants(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "variants": [
                        {"label": "a", "agent_id": EXAMPLE_AGENT, "version": 1, "weight": 90},
                        {"label": "b", "agent_id": EXAMPLE_AGENT, "version": None, "weight": 10},
                    ],
                    "sticky": "caller",
                }
            ]
        }
    )

    variants: Annotated[list[Variant], Field(min_length=1, max_length=channels.MAX_VARIANTS)]
    sticky: channels.Sticky = "caller"


Routing = Annotated[
    Pin | Variants,
    Field(description="A pin `{agent_id, version}` (version null: the draft) or weighted variants"),
]


def parse_routing(body: Any) -> tuple[tuple[channels.Variant, ...], str]:
    """Variants and sticky mode from a channel PUT body (a Pin or Variants)."""
    if isinstance(body, dict) and "variants" in body:
        routing = parse(Variants, body, InvalidRouting, "routing is invalid")
        variants = tuple(channels.Variant(**v.model_dump()) for v in routing.variants)
        sticky = routing.sticky
    else:
        pin = parse(Pin, body, InvalidRouting, "routing is invalid")
        shorthand = (channels.SHORTHAND_LABEL, pin.agent_id, pin.version, channels.SHORTHAND_WEIGHT)
        variants, sticky = (channels.Variant(*shorthand),), pin.sticky
    labels = [v.label for v in variants]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise channels.routing_error(f"variants[{i}].label", f"duplicate label {label!r}")
    if sum(v.weight for v in variants) <= 0:
        raise channels.routing_error("variants", "weights must add up to more than zero")
    return variants, sticky


# --- guardrails ------------------------------------------------------------------------------


class Rule(Body):
    """The variant breaks the rule when `metric op threshold` holds, e.g. automation_rate < 0.5."""

    metric: guardrails.Metric
    op: guardrails.Op
    threshold: float = Field(
        ge=0, description="a rate metric's is between 0 and 1; mean_duration_s's is in seconds"
    )
    min_calls: int = Field(default=guardrails.DEFAULT_MIN_CALLS, ge=1)


class SetGuardrails(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"rules": [{"metric": "automation_rate", "op": "<", "threshold": 0.5}]}]
        }
    )

    rules: Annotated[list[Rule], Field(max_length=guardrails.MAX_RULES)]


def parse_guardrails(body: Any) -> tuple[guardrails.Rule, ...]:
    """The rules of a guardrails PUT body; InvalidGuardrails with paths."""
    parsed = parse(SetGuardrails, body, InvalidGuardrails, "guardrails are invalid")
    return _rules(parsed.rules, InvalidGuardrails, "guardrails are invalid")


def _rules(
    rules: list[Rule], error: type[InvalidConfig], message: str
) -> tuple[guardrails.Rule, ...]:
    """Validated rules as the store keeps them: a rate's threshold is at most 1."""
    for i, rule in enumerate(rules):
        if rule.metric in guardrails.RATE_METRICS and rule.threshold > 1:
            raise error(
                message, [{"path": f"rules[{i}].threshold", "message": "must be between 0 and 1"}]
            )
    return tuple(guardrails.Rule(**rule.model_dump()) for rule in rules)


# --- rollouts --------------------------------------------------------------------------------


class Target(Body):
    agent_id: AgentId
    version: VersionNumber | None = Field(default=None, description="null serves the draft")


Share = Annotated[int, Field(ge=1, le=rollouts.FULL_SHARE)]


class StartRollout(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "target": {"agent_id": EXAMPLE_AGENT, "version": 2},
                    "steps": [5, 25, 50, 100],
                    "hold_s": 3600,
                    "min_calls": 30,
                    "rules": [{"metric": "automation_rate", "op": "<", "threshold": 0.5}],
                }
            ]
        }
    )

    target: Target
    steps: Annotated[
        list[Share],
        Field(
            min_length=1,
            max_length=rollouts.MAX_STEPS,
            description="percent of the calls the target takes at each step, increasing, the"
            " last 100",
        ),
    ] = Field(default_factory=lambda: list(rollouts.DEFAULT_STEPS))
    hold_s: int = Field(
        default=rollouts.DEFAULT_HOLD_S,
        ge=0,
        le=rollouts.MAX_HOLD_S,
        description="seconds each step is held at least",
    )
    min_calls: int = Field(
        default=rollouts.DEFAULT_MIN_CALLS,
        ge=0,
        le=rollouts.MAX_MIN_CALLS,
        description="analysed calls of the target each step waits for at least",
    )
    rules: Annotated[list[Rule], Field(max_length=guardrails.MAX_RULES)] = Field(
        default_factory=list, description="guardrails on the target; one broken rolls it back"
    )
    label: Label = Field(default=rollouts.DEFAULT_LABEL, description="the target's variant label")


def parse_rollout(body: Any) -> rollouts.Plan:
    """A rollout to start, from its POST body; InvalidRequest with paths."""
    message = "the rollout is invalid"
    parsed = parse(StartRollout, body, InvalidRequest, message)
    for i, share in enumerate(parsed.steps):
        if i and share <= parsed.steps[i - 1]:
            raise InvalidRequest(
                message, [{"path": f"steps[{i}]", "message": "must be larger than the step before"}]
            )
    if parsed.steps[-1] != rollouts.FULL_SHARE:
        raise InvalidRequest(
            message,
            [{"path": f"steps[{len(parsed.steps) - 1}]", "message": "the last step must be 100"}],
        )
    return rollouts.Plan(
        label=parsed.label,
        agent_id=parsed.target.agent_id,
        version=parsed.target.version,
        steps=tuple(parsed.steps),
        hold_s=parsed.hold_s,
        min_calls=parsed.min_calls,
        rules=_rules(parsed.rules, InvalidRequest, message),
    )


# --- calls -----------------------------------------------------------------------------------


class Analysis(Body):
    """The voice agent's results; `fields` are those the served config's call_analysis
    declares (each may be left out or null)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"sentiment": "positive", "automated": True, "fields": {}}]}
    )

    sentiment: Sentiment
    automated: bool
    fields: dict[str, Any] = Field(default_factory=dict)


NonEmpty = Annotated[str, Field(min_length=1)]


class GenericCall(BaseModel):
    """The router's provider-neutral call webhook."""

    model_config = ConfigDict(
        strict=True,
        json_schema_extra={
            "examples": [{"call_id": "c-1", "from": "+14155550123", "to": EXAMPLE_NUMBER}]
        },
    )

    call_id: NonEmpty
    from_: NonEmpty = Field(alias="from")
    to: NonEmpty


# The statuses a call ends with (Twilio's final ones, which the generic provider shares).
EndStatus = Literal["completed", "busy", "failed", "no-answer", "canceled"]
# Seconds: Twilio and Telnyx end a call after 24 hours at most, so a longer duration is a unit
# mistake (milliseconds sent as seconds), not a call.
MAX_CALL_DURATION_S = 86_400


def _aware_timestamp(value: Any) -> datetime:
    # Strictly a string: lax pydantic would also take a number as Unix time.
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise PydanticCustomError("timestamp", "must be an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        raise PydanticCustomError("timestamp", "must carry its UTC offset (Z or +hh:mm)")
    return parsed


class GenericCallEnded(Body):
    """The router's provider-neutral call-ended webhook: `call_id` is the one the call webhook
    sent. Without `ended_at` the call ends when this arrives; without `duration_s` it lasted
    from its start to `ended_at`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "call_id": "c-1",
                    "status": "completed",
                    "ended_at": "2026-11-26T04:16:10Z",
                    "duration_s": 70,
                }
            ]
        },
    )

    call_id: NonEmpty
    status: EndStatus
    ended_at: (
        Annotated[
            datetime,
            BeforeValidator(_aware_timestamp),
            Field(description="ISO 8601 with an offset"),
        ]
        | None
    ) = Field(default=None, json_schema_extra=_no_documented_default)
    duration_s: Annotated[float, Field(ge=0, le=MAX_CALL_DURATION_S)] | None = Field(
        default=None,
        description="seconds the call lasted",
        json_schema_extra=_no_documented_default,
    )


# --- tokens ----------------------------------------------------------------------------------


def _distinct(values: list[str]) -> list[str]:
    if len(set(values)) != len(values):
        raise PydanticCustomError("duplicate", "must not repeat an agent")
    return values


class CreateToken(OpenBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"name": "ci", "role": "viewer"},
                {"name": "support-bot", "role": "runtime", "expires_in": 86400},
            ]
        }
    )

    name: RequiredText
    role: Annotated[Role, WrapValidator(_invalid_role)]
    expires_in: int | None = Field(
        None,
        ge=1,
        le=tokens.MAX_EXPIRES_IN_S,
        description="seconds until the token expires; absent or null: never",
    )
    scopes: (
        Annotated[
            list[AgentId],
            Field(min_length=1, max_length=tokens.MAX_SCOPES),
            AfterValidator(_distinct),
        ]
        | None
    ) = Field(
        None,
        description="the only agents (ids) the token may see; anything else is 404 to it. "
        "Absent or null: every agent",
    )


# --- the resolution dry run both services answer -------------------------------------------


class ResolveQuery(BaseModel):
    to: str = Field(description="the number dialled")
    from_: str | None = Field(None, alias="from", description="the caller")
    call_id: str | None = Field(
        None, description="the provider call id, for channels sticky by call"
    )


class RolloutNote(BaseModel):
    id: int
    state: Literal["running", "paused"]
    step: int = Field(ge=0, description="index into the rollout's steps")
    share: int = Field(ge=1, le=100, description="the target's percent of the calls")
    side: Literal["target", "start"] = Field(
        description="target: the call got the rollout's target; start: a starting variant"
    )


class Resolution(BaseModel):
    """`rule` is draw, remembered, redraw, or fallback (with `reason`); routed answers name the
    channel, variant, agent_id, version, config_hash and the draw value u, among others."""

    model_config = ConfigDict(extra="allow")

    to: str
    from_: str = Field(alias="from")
    rule: Literal["draw", "remembered", "redraw", "fallback"]
    reason: str | None = None
    channel: str | None = None
    variant: str | None = None
    agent_id: str | None = None
    version: int | None = Field(None, ge=1)
    draft_revision: int | None = Field(None, ge=1)
    config_hash: str | None = None
    u: float | None = Field(None, ge=0, lt=1)
    rollout: RolloutNote | None = Field(
        None, description="the rollout in progress that split it, if any"
    )

"""What the router's endpoints take and answer, as pydantic models the OpenAPI document is
generated from (the generic webhook's body, shared with validation, is in store/schemas.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from httpkit.openapi import Shape
from store.schemas import EXAMPLE_NUMBER

# --- webhook headers and forms -----------------------------------------------------------------


class TwilioSignature(Shape):
    x_twilio_signature: str = Field(
        alias="X-Twilio-Signature",
        description="HMAC-SHA1 of the public URL and the sorted form fields, base64",
    )


class TelnyxSignature(Shape):
    telnyx_signature_ed25519: str = Field(
        alias="telnyx-signature-ed25519", description="Ed25519 over `timestamp|body`, base64"
    )
    telnyx_timestamp: str = Field(
        alias="telnyx-timestamp", description="Unix seconds; stale after five minutes"
    )


class GenericSignature(Shape):
    x_agentver_signature: str = Field(
        alias="X-Agentver-Signature", description="`sha256=` and the hex HMAC-SHA256 of the body"
    )


class TwilioCall(BaseModel):
    """The fields the router reads of Twilio's voice and status webhooks; others are ignored."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [{"CallSid": "CA1", "From": "+14155550123", "To": EXAMPLE_NUMBER}]
        },
    )

    CallSid: str
    From: str | None = None
    To: str | None = None
    CallStatus: str | None = Field(None, description="final: completed, busy, failed, ...")
    CallDuration: str | None = Field(None, description="seconds, once the call is over")
    Timestamp: str | None = Field(None, description="RFC 2822")


class TelnyxPayload(BaseModel):
    model_config = ConfigDict(extra="allow")

    call_control_id: str
    direction: str | None = None
    to: str | None = None
    from_: str | None = Field(None, alias="from")
    start_time: str | None = None
    end_time: str | None = None


class TelnyxData(BaseModel):
    model_config = ConfigDict(extra="allow")

    event_type: str = Field(description="call.initiated routes the call; call.hangup ends it")
    occurred_at: str | None = None
    payload: TelnyxPayload


class TelnyxEvent(BaseModel):
    """A Telnyx Call Control event; other event types are acknowledged and ignored."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "data": {
                        "event_type": "call.initiated",
                        "payload": {
                            "call_control_id": "v3:cc-1",
                            "direction": "incoming",
                            "from": "+14155550123",
                            "to": EXAMPLE_NUMBER,
                        },
                    }
                }
            ]
        },
    )

    data: TelnyxData


# --- answers -----------------------------------------------------------------------------------


class StreamAnswer(Shape):
    """Where the voice agent streams the call, and which configuration it was served."""

    call_id: str
    agent_id: str
    version: str = Field(description="a version number, or `draft`")
    config_hash: str
    stream_url: str
    config_url: str


class Fallback(Shape):
    action: Literal["say", "dial"]
    text: str | None = None
    number: str | None = None


class FallbackAnswer(Shape):
    """The call could not be routed: what to do with it instead."""

    fallback: Fallback


class CallConfig(Shape):
    call_id: str
    agent_id: str
    version: int | None = Field(description="null when the draft was served")
    draft_revision: int | None
    config_hash: str
    config: dict[str, Any] = Field(description="the AgentConfig the call was served")


class CallPath(Shape):
    call_id: str = Field(description="the call's id")


class ConfigPath(Shape):
    config_hash: str = Field(description="SHA-256 of the config's canonical JSON")


class IfNoneMatch(Shape):
    if_none_match: str | None = Field(
        None, alias="If-None-Match", description="the ETag held; 304 when it is current"
    )

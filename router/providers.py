"""Native answers for each provider: TwiML for Twilio, Call Control commands for Telnyx, JSON
for the generic webhook. Values are always XML-escaped, never spliced into markup raw."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET  # building only; nothing untrusted is parsed here
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from store.calls import CallRecord
from store.numbers import normalize_e164
from store.snapshots import version_label

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
TELNYX_STREAM_TRACK = "both_tracks"


@dataclass(frozen=True)
class FallbackAction:
    """What an unroutable call hears: `say` a text then hang up, or `dial` a number."""

    action: str
    value: str


def parse_fallback(setting: str) -> FallbackAction:
    """AGENTVER_FALLBACK: `say:<text>` or `dial:<e164>`; ValueError otherwise."""
    action, _, value = setting.partition(":")
    if action == "say" and value.strip():
        return FallbackAction("say", value.strip())
    if action == "dial":
        number = normalize_e164(value)
        if number is not None:
            return FallbackAction("dial", number)
    raise ValueError("AGENTVER_FALLBACK must be say:<text> or dial:<E.164 number>")


def check_stream_url(url: str) -> str:
    """The media stream URL, refused when it has a query string (Twilio rejects those)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or parts.query or parts.fragment:
        raise ValueError("AGENTVER_MEDIA_STREAM_URL must be a ws(s):// URL without a query")
    return url


# The stream parameters' names, in the order of `stream_values`.
STREAM_PARAMETERS = ("call_id", "agent_id", "version", "config_hash")


def stream_values(call: CallRecord) -> tuple[str, str, str, str]:
    """The values of STREAM_PARAMETERS for `call`."""
    return call.call_id, call.agent_id, version_label(call.version), call.config_hash


def stream_parameters(call: CallRecord) -> dict[str, str]:
    """What the voice agent needs to know about the call, as stream parameters."""
    return dict(zip(STREAM_PARAMETERS, stream_values(call), strict=True))


def _twiml(response: ET.Element) -> str:
    return XML_DECLARATION + ET.tostring(response, encoding="unicode")


# What ElementTree escapes in an attribute value: & < > and quotes and line breaks; one pass.
_ATTR_ESCAPES = str.maketrans(
    {
        "&": "&amp;",
        "<": "&lt;",
        ">": "&gt;",
        '"': "&quot;",
        "\n": "&#10;",
        "\r": "&#13;",
        "\t": "&#09;",
    }
)


def _attr(value: str) -> str:
    """An XML attribute value, quoted and escaped exactly as ElementTree writes one."""
    return '"' + value.translate(_ATTR_ESCAPES) + '"'


class StreamTwiml:
    """`<Response><Connect><Stream url=...>` with a call's `<Parameter>`s, as the bytes of the
    hot path's answer: the markup and the names compiled once per stream URL, only each call's
    values escaped into it (the bytes ElementTree would write; tests compare the two)."""

    def __init__(self, stream_url: str) -> None:
        head = f"{XML_DECLARATION}<Response><Connect><Stream url={_attr(stream_url)}>"
        parameters = "".join(f"<Parameter name={_attr(n)} value={{}} />" for n in STREAM_PARAMETERS)
        # The URL's own braces escaped, as the template is filled with str.format.
        escaped = head.replace("{", "{{").replace("}", "}}")
        self._template = f"{escaped}{parameters}</Stream></Connect></Response>"

    def __call__(self, call: CallRecord) -> bytes:
        return self._template.format(*map(_attr, stream_values(call))).encode()


def twiml_stream(stream_url: str, call: CallRecord) -> str:
    """StreamTwiml's answer as text."""
    return StreamTwiml(stream_url)(call).decode()


def twiml_fallback(fallback: FallbackAction) -> str:
    """`<Say>` then `<Hangup/>`, or `<Dial>` the fallback number."""
    response = ET.Element("Response")
    if fallback.action == "say":
        ET.SubElement(response, "Say").text = fallback.value
        ET.SubElement(response, "Hangup")
    else:
        ET.SubElement(response, "Dial").text = fallback.value
    return _twiml(response)


def telnyx_action_path(call_control_id: str, action: str) -> str:
    """`/calls/{call_control_id}/actions/{action}`, below the Call Control API base."""
    return f"/calls/{quote(call_control_id, safe='')}/actions/{action}"


def telnyx_answer(stream_url: str, call: CallRecord) -> dict[str, Any]:
    """The answer command: stream both tracks; client_state carries the call's parameters.

    command_id is fixed per call, so a redelivered call.initiated answered twice is one command
    for Telnyx.
    """
    state = json.dumps(stream_parameters(call), separators=(",", ":")).encode()
    return {
        "stream_url": stream_url,
        "stream_track": TELNYX_STREAM_TRACK,
        "client_state": base64.b64encode(state).decode(),
        "command_id": f"answer-{call.call_id}",
    }


def telnyx_fallback(fallback: FallbackAction, call_control_id: str) -> tuple[str, dict[str, Any]]:
    """The fallback command: transfer to the fallback number, or (say) reject the call.

    Call Control can only speak on an answered call; rejecting keeps an unroutable call
    from ringing forever without a multi-step answer/speak/hangup exchange.
    """
    if fallback.action == "dial":
        return "transfer", {"to": fallback.value, "command_id": f"fallback-{call_control_id}"}
    return "reject", {"cause": "CALL_REJECTED", "command_id": f"fallback-{call_control_id}"}


def generic_answer(stream_url: str, config_url: str, call: CallRecord) -> dict[str, Any]:
    """The generic webhook's JSON: the stream parameters plus where to stream and fetch config."""
    return {**stream_parameters(call), "stream_url": stream_url, "config_url": config_url}


def generic_fallback(fallback: FallbackAction) -> dict[str, Any]:
    """`{"fallback": {"action": "say", "text": ...}}` or `{... "dial", "number": ...}`."""
    field = "text" if fallback.action == "say" else "number"
    return {"fallback": {"action": fallback.action, field: fallback.value}}

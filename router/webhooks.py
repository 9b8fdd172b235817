"""Provider webhooks: verify the signature on the raw body, parse it, route or close the call
(router/calls.py routes it), and answer in the provider's terms."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

import structlog
from aiohttp import web
from pydantic import ValidationError

from httpkit.endpoint import Raw, endpoint
from httpkit.errors import ApiError
from httpkit.fastlane import LaneAnswer, LaneRequest, lane_view
from httpkit.json import json_response, parse_json
from httpkit.keys import SETTINGS
from router import providers, schemas, signatures
from router.calls import fallback, route_call
from router.keys import FALLBACK, METRICS, STREAM_TWIML, STREAM_URL, TELNYX, WRITER
from store.call_routing import Unroutable
from store.calls import CallEnd
from store.schemas import GenericCall, GenericCallEnded
from store.settings import WEBHOOK_SECRET_VARIABLES
from store.validation import InvalidRequest, parse

log = structlog.get_logger()

TWIML = "application/xml"
TWIML_UTF8 = f"{TWIML}; charset=utf-8"
FORM = "application/x-www-form-urlencoded"
# Twilio's final call statuses: the call is over and CallDuration is set.
TWILIO_FINAL = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
# An encoded `&` or `=`: a body holding one must be split before it is unquoted.
ENCODED_SEPARATOR = re.compile("%(?:26|3[dD])")


def _reject(app: web.Application, provider: str, reason: str | None) -> None:
    if reason is None:
        return
    app[METRICS].rejected.labels(provider, reason).inc()
    if reason == signatures.NOT_CONFIGURED:
        variable = WEBHOOK_SECRET_VARIABLES[provider]
        log.warning("webhook_rejected", provider=provider, reason=reason, set_variable=variable)
        raise ApiError(
            403,
            "provider_not_configured",
            f"{provider} webhooks are not configured on this server: it has no {provider} "
            "secret to verify them with",
        )
    log.info("webhook_rejected", provider=provider, reason=reason)
    raise ApiError(403, "forbidden", "the webhook signature is missing, invalid or stale")


def form_fields(raw: bytes) -> list[tuple[str, str, str]] | None:
    """A form body's fields as `str.partition("=")` splits them, (name, "=", value), or
    (name, "", "") for a field without `=`: exactly the (name, value) pairs
    `parse_qsl(raw.decode(), keep_blank_values=True)` reads (a test compares the two), or None
    when it is not UTF-8. The partitions as they are, not pairs built from them (0.4 of the
    time on a webhook's fields): router/signatures.py and the params' dict read them as well.

    A fraction of parse_qsl's work on a webhook's 25 fields: `+` is replaced once in the whole
    body (it cannot encode `&` or `=`), and the whole body is unquoted once when no escape in it
    encodes `&` or `=` (Twilio escapes the `+` of phone numbers, in about a third of the fields):
    a `%` without two hex digits after it stays as it is either way, and `&` and `=` are ASCII,
    so no UTF-8 sequence spans the end of a name or a value. Otherwise each part holding a `%`
    goes through unquote on its own.
    """
    try:
        text = raw.decode().replace("+", " ")
    except UnicodeDecodeError:
        return None
    if ENCODED_SEPARATOR.search(text) is None:
        # An ASCII body (every webhook Twilio sends) is a single run of unquote's, which it
        # unquotes as bytes and decodes: done here directly, without its split into runs.
        plain = unquote_to_bytes(text).decode(errors="replace") if text.isascii() else unquote(text)
        return [field.partition("=") for field in plain.split("&") if field]
    fields = []
    for field in text.split("&"):
        if field:
            name, equals, value = field.partition("=")
            fields.append(
                (
                    unquote(name) if "%" in name else name,
                    equals,
                    unquote(value) if "%" in value else value,
                )
            )
    return fields


def _twilio_params(
    app: web.Application, target: str, headers: Mapping[str, str], raw: bytes
) -> dict[str, str]:
    """The form parameters of a Twilio webhook whose X-Twilio-Signature checks out."""
    fields = form_fields(raw)
    settings = app[SETTINGS]
    url = settings.public_base_url + target
    signature = headers.get("x-twilio-signature")
    reason = signatures.verify_twilio(settings.twilio_auth_token, url, fields or [], signature)
    _reject(app, "twilio", reason if fields is not None else signatures.BAD)
    return {name: value for name, _, value in fields or []}


# --- Twilio ----------------------------------------------------------------------------------


async def twilio_voice_lane(app: web.Application, request: LaneRequest) -> LaneAnswer:
    """An incoming Twilio call → TwiML that connects it to the media stream (or the fallback).
    On every call's path: served by the fast lane (httpkit/fastlane.py)."""
    params = _twilio_params(app, request.target, request.headers, request.body)
    sid = params.get("CallSid")
    result = (
        await route_call(app, "twilio", params.get("To", ""), params.get("From", ""), sid)
        if sid
        else fallback(app, "twilio", "malformed")
    )
    if isinstance(result, Unroutable):
        return LaneAnswer(200, TWIML_UTF8, providers.twiml_fallback(app[FALLBACK]).encode())
    return LaneAnswer(200, TWIML_UTF8, app[STREAM_TWIML](result))


twilio_voice = endpoint(
    "An incoming Twilio call: TwiML that streams it to the voice agent (or the fallback)",
    headers=schemas.TwilioSignature,
    body=schemas.TwilioCall,
    media_types=(FORM,),
    responses={200: Raw(TWIML)},
    body_errors=(413,),
    errors=(403,),
)(lane_view(twilio_voice_lane))


def _twilio_ended_at(params: dict[str, str]) -> datetime:
    try:
        return parsedate_to_datetime(params["Timestamp"])
    except (KeyError, TypeError, ValueError):
        return datetime.now(UTC)


def _float(raw: str | None) -> float | None:
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


@endpoint(
    "A Twilio status callback: progress, or the end of the call with its duration",
    headers=schemas.TwilioSignature,
    body=schemas.TwilioCall,
    media_types=(FORM,),
    responses={204: None},
    body_errors=(413,),
    errors=(403,),
)
async def twilio_status(request: web.Request) -> web.Response:
    """A Twilio status callback: progress, or the end of the call with its duration."""
    raw = await request.read()
    params = _twilio_params(request.app, request.raw_path, request.headers, raw)
    sid, status = params.get("CallSid"), params.get("CallStatus", "")
    if sid and status in TWILIO_FINAL:
        ending = CallEnd(
            "twilio", sid, status, _twilio_ended_at(params), _float(params.get("CallDuration"))
        )
        request.app[METRICS].observe_ended(await request.app[WRITER].end(ending))
    elif sid and status:
        await request.app[WRITER].progress("twilio", sid, status)
    return web.Response(status=204)


# --- Telnyx ----------------------------------------------------------------------------------


def _timestamp(raw: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


@endpoint(
    "A Telnyx Call Control event; commands follow in the background",
    headers=schemas.TelnyxSignature,
    body=schemas.TelnyxEvent,
    responses={200: None},
    body_errors=(400, 413),
    errors=(403,),
)
async def telnyx_event(request: web.Request) -> web.Response:
    """A Telnyx Call Control event. Answered 200 at once; commands follow in the background.
    Redeliveries and out-of-order events are expected: records and commands are idempotent."""
    raw = await request.read()
    settings = request.app[SETTINGS]
    _reject(
        request.app,
        "telnyx",
        signatures.verify_telnyx(
            settings.telnyx_public_key,
            request.headers.get("telnyx-signature-ed25519"),
            request.headers.get("telnyx-timestamp"),
            raw,
            time.time(),
        ),
    )
    event = parse_json(raw)
    data = event.get("data") if isinstance(event, dict) else None
    payload = data.get("payload") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or not isinstance(payload, dict)
        or not isinstance(payload.get("call_control_id"), str)
    ):
        raise ApiError(400, "malformed_event", "not a Telnyx call event")
    kind, call_control_id = data.get("event_type"), payload["call_control_id"]
    if kind == "call.initiated" and payload.get("direction") == "incoming":
        await _telnyx_initiated(request, call_control_id, payload)
    elif kind == "call.hangup":
        await _telnyx_hangup(request, call_control_id, payload, data.get("occurred_at"))
    return web.Response(status=200)


async def _telnyx_initiated(
    request: web.Request, call_control_id: str, payload: dict[str, Any]
) -> None:
    to, raw_from = payload.get("to"), payload.get("from")
    result = await route_call(
        request.app,
        "telnyx",
        to if isinstance(to, str) else "",
        raw_from if isinstance(raw_from, str) else "",
        call_control_id,
    )
    telnyx = request.app[TELNYX]
    if isinstance(result, Unroutable):
        telnyx.command(
            call_control_id, *providers.telnyx_fallback(request.app[FALLBACK], call_control_id)
        )
    elif result.ended_at is None:  # a hangup that overtook this event means nothing to answer
        telnyx.command(
            call_control_id, "answer", providers.telnyx_answer(request.app[STREAM_URL], result)
        )


async def _telnyx_hangup(
    request: web.Request, call_control_id: str, payload: dict[str, Any], occurred_at: Any
) -> None:
    start, end = _timestamp(payload.get("start_time")), _timestamp(payload.get("end_time"))
    ended_at = end or _timestamp(occurred_at) or datetime.now(UTC)
    duration = max(0.0, (end - start).total_seconds()) if start and end else None
    ending = CallEnd("telnyx", call_control_id, "completed", ended_at, duration)
    request.app[METRICS].observe_ended(await request.app[WRITER].end(ending))


# --- generic ---------------------------------------------------------------------------------


async def _generic_body(request: web.Request) -> bytes:
    """The raw body of a generic webhook whose X-Agentver-Signature checks out."""
    raw = await request.read()
    signature = request.headers.get("X-Agentver-Signature")
    secret = request.app[SETTINGS].generic_secret
    _reject(request.app, "generic", signatures.verify_generic(secret, raw, signature))
    return raw


@endpoint(
    "A provider-neutral call: where to stream it and fetch its config (or the fallback)",
    headers=schemas.GenericSignature,
    body=GenericCall,
    responses={200: schemas.StreamAnswer | schemas.FallbackAnswer},
    body_errors=(400, 413),
    errors=(403,),
)
async def generic_call(request: web.Request) -> web.Response:
    """A provider-neutral call `{call_id, from, to}` → JSON answer (or the fallback)."""
    raw = await _generic_body(request)
    settings = request.app[SETTINGS]
    try:
        call = GenericCall.model_validate(parse_json(raw))
    except ValidationError:
        raise ApiError(
            400, "malformed_body", "send {call_id, from, to} as non-empty strings"
        ) from None
    result = await route_call(request.app, "generic", call.to, call.from_, call.call_id)
    if isinstance(result, Unroutable):
        return json_response(providers.generic_fallback(request.app[FALLBACK]))
    config_url = f"{settings.public_base_url}/v1/calls/{result.call_id}/config"
    return json_response(providers.generic_answer(request.app[STREAM_URL], config_url, result))


@endpoint(
    "A provider-neutral call ended: its final status, end time and duration",
    headers=schemas.GenericSignature,
    body=GenericCallEnded,
    responses={204: None},
    body_errors=(400, 413, 422),
    errors=(403,),
)
async def generic_ended(request: web.Request) -> web.Response:
    """Close a generic call as Twilio's status callback closes a Twilio one: idempotent, and an
    ending that overtakes its call is kept until the call is recorded."""
    raw = await _generic_body(request)
    body = parse(GenericCallEnded, parse_json(raw), InvalidRequest, "the call ending is invalid")
    ended_at = body.ended_at or datetime.now(UTC)
    ending = CallEnd("generic", body.call_id, body.status, ended_at, body.duration_s)
    request.app[METRICS].observe_ended(await request.app[WRITER].end(ending))
    return web.Response(status=204)

"""`python -m router call`: one signed test call placed on a running router the way a provider
places it, and what the router served: the call id, the agent and version, the answer itself.

Signatures come from router/signatures.py, the same code the router verifies with. A Telnyx call
is answered by a Call Control command rather than in the webhook's response, so for Telnyx this
command also stands in for the Call Control API at AGENTVER_TELNYX_API_BASE (which must then be
on this machine, as `make run` sets it) and shows the command it receives.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import os
import secrets
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from aiohttp import web
from nacl.signing import SigningKey

from router.signatures import generic_signature, telnyx_signature, twilio_signature
from store.settings import WEBHOOK_SECRET_VARIABLES, Settings

PROVIDERS = ("twilio", "telnyx", "generic")
# The private half of TELNYX_PUBLIC_KEY (base64 of its 32-byte seed): only a test caller has it.
TELNYX_SIGNING_KEY_VARIABLE = "AGENTVER_TELNYX_SIGNING_KEY"
# Seconds to wait for the router's answer; providers wait about 15.
ANSWER_TIMEOUT_S = 15.0
# Seconds to wait for the router's Call Control command after its 200 to a Telnyx event: it
# sends the command right after answering the webhook.
COMMAND_TIMEOUT_S = 5.0
# Where a local stack's router sends Telnyx commands: `call` stands in for Telnyx there.
DEV_TELNYX_API_BASE = "http://127.0.0.1:8089/v2"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# What Twilio sends with an incoming call besides who calls whom (its documented parameters).
TWILIO_CALL = {
    "AccountSid": "AC" + "0" * 32,
    "CallStatus": "ringing",
    "Direction": "inbound",
    "ApiVersion": "2010-04-01",
    "FromCountry": "US",
    "ToCountry": "US",
}


class CallFailed(Exception):
    """The call could not be placed, or what came back is not an answer."""


@dataclass(frozen=True)
class Answer:
    """What the router answered: its status and answer, and what it served (None: the
    fallback, or a refusal)."""

    status: int
    body: str
    served: dict[str, str] | None


def development_secrets() -> dict[str, str]:
    """Fresh webhook secrets for a local stack, with what signs its test calls: a Telnyx key
    pair and a stand-in Call Control API on this machine (where `call` takes its commands)."""
    key = SigningKey.generate()
    return {
        WEBHOOK_SECRET_VARIABLES["twilio"]: "dev-" + secrets.token_hex(16),
        WEBHOOK_SECRET_VARIABLES["generic"]: "dev-" + secrets.token_hex(16),
        WEBHOOK_SECRET_VARIABLES["telnyx"]: base64.b64encode(bytes(key.verify_key)).decode(),
        TELNYX_SIGNING_KEY_VARIABLE: base64.b64encode(bytes(key)).decode(),
        "TELNYX_API_KEY": "dev-" + secrets.token_hex(16),
        "AGENTVER_TELNYX_API_BASE": DEV_TELNYX_API_BASE,
    }


def add_parsers(subcommands: Any) -> None:
    """The `call` and `dev-secrets` subcommands of `python -m router`."""
    subcommands.add_parser(
        "dev-secrets",
        help="print fresh webhook secrets for a local stack as KEY=VALUE lines (make run's)",
        description="Print fresh development webhook secrets, for local use only, as KEY=VALUE "
        "lines: the router's own, and what `call` signs Telnyx calls and takes their Call "
        "Control commands with.",
    )
    call = subcommands.add_parser(
        "call",
        help="place a signed test call on a running router and show what it served",
        description="Sign and send a realistic incoming-call webhook to a router, then print "
        "the call id, the agent version served and the answer. Secrets are read from the "
        "environment (the router's own variables, and "
        f"{TELNYX_SIGNING_KEY_VARIABLE} for Telnyx), then from --env-file.",
    )
    call.add_argument("--to", required=True, help="the number called (E.164)")
    call.add_argument("--from", dest="caller", required=True, help="the caller's number")
    call.add_argument("--provider", choices=PROVIDERS, default="twilio")
    call.add_argument(
        "--url", help="the router to call (default: http://127.0.0.1:AGENTVER_ROUTER_PORT)"
    )
    call.add_argument(
        "--env-file", type=Path, help="KEY=VALUE lines over the environment (make run writes one)"
    )


def main(args: argparse.Namespace) -> int:
    """Place the call and print what was served; 0 if a version was served."""
    env = dict(os.environ)
    try:
        if args.env_file is not None:
            env.update(read_env_file(args.env_file))
        settings = Settings.from_env(env)
        url = (args.url or f"http://127.0.0.1:{settings.router_port}").rstrip("/")
        answer = asyncio.run(
            place_call(args.provider, settings, env, url, to=args.to, caller=args.caller)
        )
    except CallFailed as exc:
        print(f"python -m router call: {exc}", file=sys.stderr)
        return 2
    print(describe(args.provider, answer))
    return 0 if answer.served is not None else 1


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=VALUE` lines (blank lines and `#` comments skipped), as a shell sources them when
    the values need no quoting."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise CallFailed(f"cannot read {path}: {exc.strerror}") from None
    values = {}
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip().isidentifier():
            raise CallFailed(f"{path}:{number}: not a KEY=VALUE line")
        values[name.strip()] = value.strip()
    return values


async def place_call(
    provider: str, settings: Settings, env: dict[str, str], url: str, *, to: str, caller: str
) -> Answer:
    """Send one signed incoming call from `provider` to the router at `url`."""
    timeout = aiohttp.ClientTimeout(total=ANSWER_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            if provider == "twilio":
                return await _twilio(session, settings, url, to, caller)
            if provider == "generic":
                return await _generic(session, settings, url, to, caller)
            return await _telnyx(session, settings, env, url, to, caller)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CallFailed(f"no answer from {url}: {exc or type(exc).__name__}") from None


def _secret(value: str | None, provider: str) -> str:
    if not value:
        variable = WEBHOOK_SECRET_VARIABLES[provider]
        raise CallFailed(f"set {variable} (the router's {provider} secret) to sign the call")
    return value


async def _twilio(
    session: aiohttp.ClientSession, settings: Settings, url: str, to: str, caller: str
) -> Answer:
    path = "/webhooks/twilio/voice"
    params = {"CallSid": "CA" + secrets.token_hex(16), "From": caller, "To": to}
    params |= {"Caller": caller, "Called": to, **TWILIO_CALL}
    token = _secret(settings.twilio_auth_token, "twilio")
    # Twilio signs the URL it was given, which is the router's public one.
    signature = twilio_signature(token, settings.public_base_url + path, params.items())
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature}
    async with session.post(url + path, data=urlencode(params), headers=headers) as resp:
        body = await resp.text()
    served = stream_parameters(body) if resp.status == 200 else None
    return Answer(resp.status, body, served)


def stream_parameters(twiml: str) -> dict[str, str] | None:
    """The <Stream> url and <Parameter>s of a TwiML answer; None when it streams nowhere (the
    fallback)."""
    try:
        root = ET.fromstring(twiml)  # noqa: S314 (a router's answer; expat refuses entity bombs)
    except ET.ParseError:
        raise CallFailed(f"the answer is not TwiML: {twiml[:200]!r}") from None
    stream = root.find("./Connect/Stream")
    if stream is None:
        return None
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    return {"url": stream.attrib["url"], **params}


async def _generic(
    session: aiohttp.ClientSession, settings: Settings, url: str, to: str, caller: str
) -> Answer:
    raw = json.dumps({"call_id": f"test-{uuid.uuid4()}", "from": caller, "to": to}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Agentver-Signature": generic_signature(_secret(settings.generic_secret, "generic"), raw),
    }
    async with session.post(url + "/webhooks/generic/call", data=raw, headers=headers) as resp:
        body = await resp.text()
    answer = json.loads(body) if resp.status == 200 else {}
    served = answer if "call_id" in answer else None
    return Answer(resp.status, body, served)


def telnyx_incoming(call_control_id: str, to: str, caller: str) -> dict[str, Any]:
    """A `call.initiated` event for an incoming call, as Telnyx delivers it."""
    leg = str(uuid.uuid4())
    return {
        "data": {
            "record_type": "event",
            "event_type": "call.initiated",
            "id": str(uuid.uuid4()),
            "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "payload": {
                "call_control_id": call_control_id,
                "connection_id": "test-connection",
                "call_leg_id": leg,
                "call_session_id": str(uuid.uuid4()),
                "client_state": None,
                "from": caller,
                "to": to,
                "direction": "incoming",
                "state": "parked",
            },
        },
        "meta": {"attempt": 1, "delivered_to": "/webhooks/telnyx"},
    }


def _signing_key(env: dict[str, str]) -> SigningKey:
    raw = env.get(TELNYX_SIGNING_KEY_VARIABLE)
    if not raw:
        raise CallFailed(
            f"set {TELNYX_SIGNING_KEY_VARIABLE} (base64 of the Ed25519 seed whose public key is "
            "the router's TELNYX_PUBLIC_KEY) to sign a Telnyx call"
        )
    try:
        return SigningKey(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        raise CallFailed(f"{TELNYX_SIGNING_KEY_VARIABLE} is not a base64 32-byte seed") from None


async def _telnyx(
    session: aiohttp.ClientSession,
    settings: Settings,
    env: dict[str, str],
    url: str,
    to: str,
    caller: str,
) -> Answer:
    key = _signing_key(env)
    call_control_id = "v3:" + secrets.token_urlsafe(32)
    async with CallControlStandIn(settings.telnyx_api_base, call_control_id) as commands:
        raw = json.dumps(telnyx_incoming(call_control_id, to, caller)).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "telnyx-timestamp": timestamp,
            "telnyx-signature-ed25519": telnyx_signature(key, timestamp, raw),
        }
        async with session.post(url + "/webhooks/telnyx", data=raw, headers=headers) as resp:
            body = await resp.text()
        if resp.status != 200:
            return Answer(resp.status, body, None)
        try:
            action, command = await asyncio.wait_for(commands.get(), COMMAND_TIMEOUT_S)
        except TimeoutError:
            raise CallFailed(
                f"the router took the event (200) but sent no Call Control command to "
                f"{settings.telnyx_api_base} within {COMMAND_TIMEOUT_S:.0f} s: it sends them only "
                "when its TELNYX_API_KEY is set and its AGENTVER_TELNYX_API_BASE is this one"
            ) from None
    shown = json.dumps({"action": action, **command}, indent=2)
    if action != "answer":
        return Answer(resp.status, shown, None)
    served: dict[str, str] = json.loads(base64.b64decode(command["client_state"]))
    return Answer(resp.status, shown, {"url": command["stream_url"], **served})


class CallControlStandIn:
    """The Call Control API at `base_url` (on this machine) for the length of a test call: the
    commands for `call_control_id` arrive in `commands` as (action, body)."""

    def __init__(self, base_url: str, call_control_id: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS:
            raise CallFailed(
                f"AGENTVER_TELNYX_API_BASE is {base_url}: a Telnyx test call needs it on this "
                f"machine (make run sets {DEV_TELNYX_API_BASE}), where this command takes "
                "the router's Call Control commands in Telnyx's place"
            )
        self._host, self._port = parts.hostname, parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self._call_control_id = call_control_id
        self.commands: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._runner: web.AppRunner | None = None

    async def _command(self, request: web.Request) -> web.Response:
        if request.match_info["call_control_id"] != self._call_control_id:
            return web.json_response({"errors": [{"title": "unknown call"}]}, status=404)
        await self.commands.put((request.match_info["action"], await request.json()))
        return web.json_response({"data": {"result": "ok"}})

    async def __aenter__(self) -> asyncio.Queue[tuple[str, dict[str, Any]]]:
        app = web.Application()
        app.router.add_post(
            self._prefix + "/calls/{call_control_id}/actions/{action}", self._command
        )
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self._host, self._port).start()
        except OSError as exc:
            await self._runner.cleanup()
            raise CallFailed(f"cannot take Call Control commands on {self._port}: {exc}") from None
        return self.commands

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def describe(provider: str, answer: Answer) -> str:
    """What a person reads: the call id and version served (or why none), then the answer."""
    if answer.served is not None:
        lines = [
            f"{provider} call answered {answer.status}: served version "
            f"{answer.served['version']} of agent {answer.served['agent_id']}",
            f"  call id:     {answer.served['call_id']}",
            f"  version:     {answer.served['version']}",
            f"  config hash: {answer.served['config_hash']}",
        ]
    elif answer.status == 200:
        lines = [f"{provider} call answered {answer.status} with the fallback: no agent serves it"]
    else:
        lines = [f"{provider} call refused: {answer.status}"]
    return "\n".join([*lines, "answer:", answer.body])

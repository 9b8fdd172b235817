"""The benchmark's data set and the requests made against it.

Channel i is `+1555` followed by i on seven digits, so a load generator can address any channel
of the seeded set by index without reading the database. What each channel routes to (pinned
version, draft, A/B test) is decided by dataset.py from the same index.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import secrets
from urllib.parse import quote_plus, urlencode

from loadtests.httpclient import build_request
from router.signatures import twilio_signature

TWILIO_VOICE_PATH = "/webhooks/twilio/voice"
HOST = "router.bench.example"
# The router's URL as the provider sees it (behind a load balancer every worker has the same).
PUBLIC_BASE_URL = "https://" + HOST
ACCOUNT_SID = "AC" + "0" * 30 + "be"
# Distinct callers: enough that most calls come from a new caller, few enough that some call back.
CALLERS = 50_000


def channel_number(index: int) -> str:
    return f"+1555{index:07d}"


def caller_number(index: int) -> str:
    return f"+1212{index:07d}"


def twilio_params(call_sid: str, to: str, caller: str) -> dict[str, str]:
    """The form a real Twilio voice webhook posts (the geographic fields Twilio adds included)."""
    return {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to,
        "CalledCity": "",
        "CalledCountry": "US",
        "CalledState": "CA",
        "CalledZip": "",
        "Caller": caller,
        "CallerCity": "NEW YORK",
        "CallerCountry": "US",
        "CallerState": "NY",
        "CallerZip": "10001",
        "Direction": "inbound",
        "From": caller,
        "FromCity": "NEW YORK",
        "FromCountry": "US",
        "FromState": "NY",
        "FromZip": "10001",
        "To": to,
        "ToCity": "",
        "ToCountry": "US",
        "ToState": "CA",
        "ToZip": "",
    }


def twilio_request(token: str, to: str, caller: str, call_sid: str | None = None) -> bytes:
    """One signed Twilio voice webhook with a fresh CallSid."""
    sid = call_sid or "CA" + secrets.token_hex(16)
    params = twilio_params(sid, to, caller)
    signature = twilio_signature(token, PUBLIC_BASE_URL + TWILIO_VOICE_PATH, params.items())
    headers = {
        "User-Agent": "TwilioProxy/1.1",
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": signature,
        "Accept": "*/*",
    }
    return build_request("POST", TWILIO_VOICE_PATH, HOST, headers, urlencode(params).encode())


class TwilioBatch:
    """Builds many signed webhooks fast: the form and the signed string are templates with
    three holes (CallSid, caller, called number), equal byte for byte to what
    `twilio_request` makes (tests/test_loadtests.py checks it)."""

    HOLES = frozenset({"CallSid", "Called", "To", "Caller", "From"})

    def __init__(self, token: str) -> None:
        params = twilio_params("{sid}", "{to}", "{caller}")
        self._mac = hmac.new(token.encode(), digestmod=hashlib.sha1)
        self._signed = (
            PUBLIC_BASE_URL
            + TWILIO_VOICE_PATH
            + "".join(name + params[name] for name in sorted(params))
        )
        self._body = "&".join(
            f"{name}={params[name] if name in self.HOLES else quote_plus(params[name])}"
            for name in params
        )

    def request(self, sid: str, to: str, caller: str) -> bytes:
        mac = self._mac.copy()
        mac.update(self._signed.format(sid=sid, to=to, caller=caller).encode())
        signature = base64.b64encode(mac.digest()).decode()
        body = self._body.format(sid=sid, to=quote_plus(to), caller=quote_plus(caller)).encode()
        headers = {
            "User-Agent": "TwilioProxy/1.1",
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
            "Accept": "*/*",
        }
        return build_request("POST", TWILIO_VOICE_PATH, HOST, headers, body)


def twilio_requests(token: str, channels: int, count: int, seed: int) -> list[bytes]:
    """`count` signed webhooks, each to a random one of the first `channels` channels from a
    random caller, every one with its own CallSid."""
    rng = random.Random(seed)
    batch = TwilioBatch(token)
    return [
        batch.request(
            "CA" + secrets.token_hex(16),
            channel_number(rng.randrange(channels)),
            caller_number(rng.randrange(CALLERS)),
        )
        for _ in range(count)
    ]


def config_requests(token: str, call_ids: list[str]) -> list[bytes]:
    """The voice agent's runtime lookups, one per call id."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    return [build_request("GET", f"/v1/calls/{c}/config", HOST, headers) for c in call_ids]

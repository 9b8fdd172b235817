"""Webhook signature checks, against the providers' published vectors and official SDKs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from twilio.request_validator import RequestValidator

from router import signatures
from router.signatures import BAD, MISSING, NOT_CONFIGURED, STALE

# The providers' vectors as shared beside the checkout: ../shared/fixtures/providers.json from
# the repository root.
CHECKOUT = Path(__file__).resolve().parents[1]
FIXTURES = CHECKOUT.parent / "shared" / "fixtures" / "providers.json"
TWILIO_VECTOR: dict[str, Any] = {
    # Twilio's published example, as in FIXTURES.
    "auth_token": "12345",
    "url": "https://mycompany.com/myapp.php?foo=1&bar=2",
    "params": {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    },
    "expected_signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
    "also_valid_for_url": "https://mycompany.com:443/myapp.php?foo=1&bar=2",
}


def test_vector_matches_shared_fixture() -> None:
    if not FIXTURES.exists():
        pytest.skip(f"{FIXTURES} is not beside this checkout")
    assert json.loads(FIXTURES.read_text())["twilio_signature_vector"] == TWILIO_VECTOR


@pytest.mark.parametrize(
    ("token", "url", "signature", "expected"),
    [
        ("12345", TWILIO_VECTOR["url"], TWILIO_VECTOR["expected_signature"], None),
        ("12345", TWILIO_VECTOR["also_valid_for_url"], TWILIO_VECTOR["expected_signature"], None),
        (
            "12345",
            "https://mycompany.com/other.php?foo=1&bar=2",
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ=",
            BAD,
        ),
        ("54321", TWILIO_VECTOR["url"], TWILIO_VECTOR["expected_signature"], BAD),
        ("12345", TWILIO_VECTOR["url"], "", MISSING),
        ("12345", TWILIO_VECTOR["url"], None, MISSING),
        (None, TWILIO_VECTOR["url"], TWILIO_VECTOR["expected_signature"], NOT_CONFIGURED),
    ],
)
def test_twilio_vector(
    token: str | None, url: str, signature: str | None, expected: str | None
) -> None:
    params = TWILIO_VECTOR["params"].items()
    assert signatures.verify_twilio(token, url, params, signature) == expected


def test_twilio_signature_agrees_with_the_official_sdk() -> None:
    params = {"To": "+14155550100", "From": "+1 (212) 555-0123", "Body": "é & <x>", "Empty": ""}
    url = "http://127.0.0.1:8080/webhooks/twilio/voice?x=1"
    official = RequestValidator("tok").compute_signature(url, params)
    assert signatures.twilio_signature("tok", url, params.items()) == official
    assert signatures.verify_twilio("tok", url, params.items(), official) is None
    # The port Twilio may have left out of the URL it signed.
    without_port = RequestValidator("tok").compute_signature(
        "http://127.0.0.1/webhooks/twilio/voice?x=1", params
    )
    assert signatures.verify_twilio("tok", url, params.items(), without_port) is None


SECRET = "generic-secret"


def _generic(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("secret", "header", "expected"),
    [
        (SECRET, _generic(b'{"a":1}'), None),
        (SECRET, _generic(b'{"a":2}'), BAD),
        (SECRET, _generic(b'{"a":1}', "other-secret"), BAD),
        (SECRET, _generic(b'{"a":1}').removeprefix("sha256="), BAD),
        (SECRET, None, MISSING),
        (None, _generic(b'{"a":1}'), NOT_CONFIGURED),
    ],
)
def test_generic(secret: str | None, header: str | None, expected: str | None) -> None:
    assert signatures.verify_generic(secret, b'{"a":1}', header) == expected


KEY = SigningKey(b"\x01" * 32)
PUBLIC = base64.b64encode(bytes(KEY.verify_key)).decode()
BODY = b'{"data":{"event_type":"call.initiated"}}'
NOW = 1_800_000_000


def _telnyx_signature(timestamp: int, body: bytes = BODY, key: SigningKey = KEY) -> str:
    signed = key.sign(str(timestamp).encode() + b"|" + body).signature
    return base64.b64encode(signed).decode()


@pytest.mark.parametrize(
    ("public", "signature", "timestamp", "expected"),
    [
        (PUBLIC, _telnyx_signature(NOW), str(NOW), None),
        (PUBLIC, _telnyx_signature(NOW - 299), str(NOW - 299), None),
        (PUBLIC, _telnyx_signature(NOW - 301), str(NOW - 301), STALE),
        (PUBLIC, _telnyx_signature(NOW + 301), str(NOW + 301), STALE),
        (PUBLIC, _telnyx_signature(NOW - 1), str(NOW), BAD),  # timestamp swapped
        (PUBLIC, _telnyx_signature(NOW, b"{}"), str(NOW), BAD),  # other body
        (PUBLIC, _telnyx_signature(NOW, key=SigningKey(b"\x02" * 32)), str(NOW), BAD),
        (PUBLIC, "not base64!", str(NOW), BAD),
        (PUBLIC, _telnyx_signature(NOW), "soon", BAD),
        (PUBLIC, None, str(NOW), MISSING),
        (PUBLIC, _telnyx_signature(NOW), None, MISSING),
        (None, _telnyx_signature(NOW), str(NOW), NOT_CONFIGURED),
        ("bm90IGEga2V5", _telnyx_signature(NOW), str(NOW), BAD),  # not a 32-byte key
    ],
)
def test_telnyx(
    public: str | None, signature: str | None, timestamp: str | None, expected: str | None
) -> None:
    assert signatures.verify_telnyx(public, signature, timestamp, BODY, NOW) == expected

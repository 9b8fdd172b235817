"""Webhook signature checks: pure functions over the raw request, constant-time comparisons.

Each returns None when the request is authentic, else the rejection reason (a metric label).
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import operator
from collections.abc import Collection, Iterable
from urllib.parse import urlsplit, urlunsplit

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

MISSING = "missing_signature"
BAD = "bad_signature"
STALE = "stale_timestamp"
NOT_CONFIGURED = "not_configured"

# Seconds: Telnyx's documented tolerance; older signed requests may be replays.
TELNYX_TOLERANCE_S = 300
GENERIC_SCHEME = "sha256="
DEFAULT_PORTS = {"http": 80, "https": 443}
# Distinct webhook URLs whose port variants are remembered (the path and query are part of it).
PORT_VARIANTS_CACHE = 256


# A form's parameters as (name, value) pairs, or as the fields `name=value` split by
# str.partition("="): (name, "=", value). Both give the name first and the value last.
Params = Collection[tuple[str, ...]]
_NAME = operator.itemgetter(0)


def twilio_signature(token: str, url: str, params: Params) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 of the URL followed by every parameter name and
    value, names sorted, each name's distinct values sorted (as Twilio's RequestValidator)."""
    return _twilio_mac(token, url + _signed_params(params))


def _signed_params(params: Params) -> str:
    if len(set(map(_NAME, params))) == len(params):
        # Names all distinct (every webhook Twilio sends): the name alone orders them, and no
        # pair repeats. The fields as they are, without a (name, value) tuple built for each.
        ordered: Iterable[tuple[str, ...]] = sorted(params)
    else:
        # Sorting the distinct (name, value) pairs orders names, then each name's values.
        ordered = sorted({(p[0], p[-1]) for p in params})
    return "".join([p[0] + p[-1] for p in ordered])


def _twilio_mac(token: str, signed: str) -> str:
    mac = hmac.new(token.encode(), signed.encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


# Keyed once per (token, URL), not per webhook: copying a keyed HMAC that has already hashed
# the URL skips the key schedule and the URL on every request.
@functools.lru_cache(maxsize=PORT_VARIANTS_CACHE)
def _url_macs(token: str, url: str) -> tuple[hmac.HMAC, ...]:
    return tuple(
        hmac.new(token.encode(), candidate.encode(), hashlib.sha1)
        for candidate in _port_variants(url)
    )


# Computed once per URL, not per webhook: a worker sees a handful of webhook URLs.
@functools.lru_cache(maxsize=PORT_VARIANTS_CACHE)
def _port_variants(url: str) -> tuple[str, ...]:
    """`url` itself first, then the URL without its port or with its scheme's default port, as
    Twilio's validator accepts either (a proxy may or may not have shown Twilio the port)."""
    return tuple(dict.fromkeys([url, *_other_port_variants(url)]))


def _other_port_variants(url: str) -> set[str]:
    """The URL without its port and with its scheme's default port, as Twilio's validator
    accepts either (a proxy may or may not have shown Twilio the port)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = userinfo + "@" if userinfo else ""
    variants = {urlunsplit(parts._replace(netloc=prefix + host))}
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # a port out of range or not a number: no URL Twilio could have used
        return {url}
    if parts.port is None and port is not None:
        variants.add(urlunsplit(parts._replace(netloc=f"{prefix}{host}:{port}")))
    else:
        variants.add(url)
    return variants


def verify_twilio(token: str | None, url: str, params: Params, signature: str | None) -> str | None:
    """Check X-Twilio-Signature for a request to `url` (as Twilio saw it) with form `params`."""
    if not token:
        return NOT_CONFIGURED
    if not signature:
        return MISSING
    signed_params = _signed_params(params).encode()
    expected = signature.encode()
    for url_mac in _url_macs(token, url):
        mac = url_mac.copy()
        mac.update(signed_params)
        if hmac.compare_digest(base64.b64encode(mac.digest()), expected):
            return None
    return BAD


def generic_signature(secret: str, body: bytes) -> str:
    """X-Agentver-Signature: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    return GENERIC_SCHEME + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_generic(secret: str | None, body: bytes, header: str | None) -> str | None:
    """Check `X-Agentver-Signature: sha256=<hex HMAC-SHA256 of the body>`."""
    if not secret:
        return NOT_CONFIGURED
    if not header:
        return MISSING
    expected = generic_signature(secret, body)
    return None if hmac.compare_digest(expected.encode(), header.strip().encode()) else BAD


def _telnyx_signed(timestamp: str, body: bytes) -> bytes:
    return timestamp.encode() + b"|" + body


def telnyx_signature(key: SigningKey, timestamp: str, body: bytes) -> str:
    """telnyx-signature-ed25519 as Telnyx makes it, for a test call: base64 Ed25519 signature
    of `timestamp|body` with the private half of TELNYX_PUBLIC_KEY."""
    return base64.b64encode(key.sign(_telnyx_signed(timestamp, body)).signature).decode()


def verify_telnyx(
    public_key: str | None,
    signature: str | None,
    timestamp: str | None,
    body: bytes,
    now: float,
) -> str | None:
    """Check telnyx-signature-ed25519 (base64) over `timestamp|body`, and the timestamp's age."""
    if not public_key:
        return NOT_CONFIGURED
    if not signature or not timestamp:
        return MISSING
    try:
        sent_at = int(timestamp)
        key = VerifyKey(base64.b64decode(public_key, validate=True))
        raw_signature = base64.b64decode(signature, validate=True)
        key.verify(_telnyx_signed(timestamp, body), raw_signature)
    except (ValueError, binascii.Error, BadSignatureError):
        return BAD
    if abs(now - sent_at) > TELNYX_TOLERANCE_S:
        return STALE
    return None

"""Property tests of everything that reads untrusted webhook input before (and right after) the
signature check: the verifiers, the JSON parser, number and caller normalisation, the spool
reader. Whatever the bytes, each returns or raises its one documented error."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Any
from urllib.parse import parse_qsl

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from httpkit.errors import ApiError
from httpkit.json import parse_json
from router import signatures
from router.spool import decode_records, encode_record
from router.webhooks import form_fields
from store.call_routing import MAX_FROM_CHARS, caller_of
from store.numbers import normalize_e164

# The autouse table-cleaning fixture runs once per test, not per example: fine for pure code.
FUZZ = settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
REASONS = {None, signatures.MISSING, signatures.BAD, signatures.STALE, signatures.NOT_CONFIGURED}
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
KEY = SigningKey(b"k" * 32)
PUBLIC_KEY = base64.b64encode(bytes(KEY.verify_key)).decode()

texts = st.text(max_size=200)
pairs = st.lists(st.tuples(texts, texts), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(token=st.none() | texts, url=texts, params=pairs, signature=st.none() | texts)
def test_twilio_verification_never_raises(
    token: str | None, url: str, params: list[tuple[str, str]], signature: str | None
) -> None:
    reason = signatures.verify_twilio(token, url, params, signature)
    assert reason in REASONS
    if token and reason is None:
        assert signature in {
            signatures.twilio_signature(token, u, params) for u in signatures._port_variants(url)
        }


@FUZZ
@given(url=st.from_regex(r"https?://[a-z]{1,10}(:[0-9]{1,5})?/[a-z/]{0,20}", fullmatch=True))
def test_twilio_accepts_its_own_signature(url: str) -> None:
    params = [("CallSid", "CA1"), ("To", "+14155550100")]
    signature = signatures.twilio_signature("token", url, params)
    assert signatures.verify_twilio("token", url, params, signature) is None


@FUZZ
@given(secret=st.none() | texts, body=st.binary(max_size=500), header=st.none() | texts)
def test_generic_verification_never_raises(
    secret: str | None, body: bytes, header: str | None
) -> None:
    assert signatures.verify_generic(secret, body, header) in REASONS


@FUZZ
@given(
    signature=st.none() | texts | st.binary(max_size=80).map(base64.b64encode).map(bytes.decode),
    timestamp=st.none() | texts | st.integers().map(str),
    body=st.binary(max_size=500),
)
def test_telnyx_verification_never_raises(
    signature: str | None, timestamp: str | None, body: bytes
) -> None:
    assert signatures.verify_telnyx(PUBLIC_KEY, signature, timestamp, body, 0.0) in REASONS


@FUZZ
@given(body=st.binary(max_size=300), sent_at=st.integers(min_value=0, max_value=2**40))
def test_telnyx_accepts_its_own_signature_only_when_fresh(body: bytes, sent_at: int) -> None:
    timestamp = str(sent_at)
    signature = base64.b64encode(KEY.sign(timestamp.encode() + b"|" + body).signature).decode()
    for now, expected in ((sent_at + 10, None), (sent_at + 301, signatures.STALE)):
        assert signatures.verify_telnyx(PUBLIC_KEY, signature, timestamp, body, now) == expected


@FUZZ
@given(raw=st.binary(max_size=300) | json_values.map(lambda v: repr(v).encode()))
def test_parse_json_returns_or_raises_400(raw: bytes) -> None:
    try:
        parse_json(raw)
    except ApiError as exc:
        assert exc.status == 400


@FUZZ
@given(raw=texts)
def test_numbers_normalise_to_e164_or_none(raw: str) -> None:
    number = normalize_e164(raw)
    assert number is None or E164.match(number)


@FUZZ
@given(raw=texts)
def test_callers_are_short_printable_text(raw: str) -> None:
    caller = caller_of(raw)
    assert caller and len(caller) <= MAX_FROM_CHARS and caller.isprintable()


@FUZZ
@given(data=st.binary(max_size=400))
def test_the_spool_reader_survives_any_bytes(data: bytes) -> None:
    records, _ = decode_records(data)
    assert all(isinstance(r, dict) for r in records)


@FUZZ
@given(records=st.lists(st.dictionaries(texts, json_values, max_size=5), max_size=5))
def test_spool_records_round_trip(records: list[dict[str, Any]]) -> None:
    data = b"".join(encode_record(r) for r in records)
    assert decode_records(data) == (records, False)


form_bytes = st.binary(max_size=300) | st.text(alphabet="ab=&+%2BCé", max_size=60).map(str.encode)


@FUZZ
@given(raw=form_bytes)
def test_form_fields_read_a_body_as_parse_qsl_does(raw: bytes) -> None:
    try:
        expected = parse_qsl(raw.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        expected = None
    fields = form_fields(raw)
    assert (None if fields is None else [(name, value) for name, _, value in fields]) == expected


@FUZZ
@given(raw=form_bytes, repeat=st.booleans())
def test_fields_are_signed_as_their_pairs(raw: bytes, repeat: bool) -> None:
    """Repeated names, repeated fields and fields without `=` included: what is signed is every
    distinct (name, value) once, sorted, whether given as fields or as pairs."""
    fields = form_fields(raw + b"&" + raw if repeat else raw) or []
    pairs = [(name, value) for name, _, value in fields]
    signed = "".join(name + value for name, value in sorted(set(pairs)))
    mac = hmac.new(b"token", ("https://x/v" + signed).encode(), hashlib.sha1)
    reference = base64.b64encode(mac.digest()).decode()
    assert signatures.twilio_signature("token", "https://x/v", fields) == reference
    assert signatures.twilio_signature("token", "https://x/v", pairs) == reference
    assert signatures.verify_twilio("token", "https://x/v", fields, reference) is None

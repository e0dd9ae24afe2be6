"""Hostile input to the heartbeat decoder (hypothesis, derandomized and bounded).

Whatever bytes a publisher (or anyone with XADD) puts in field `m`, `decode_heartbeat` either
returns a valid Heartbeat or raises InvalidMessage with a reason: never anything else, since
any other exception would stop the fold at that entry, on every restart (a poison pill).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aggregator.fold import Folder
from aggregator.state import FoldState
from healthbus.errors import InvalidMessage
from healthbus.schema import MESSAGE_MAX_BYTES, SERVICE_PATTERN, Heartbeat, decode_heartbeat, encode

pytestmark = pytest.mark.fault

FUZZ = settings(
    max_examples=400,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

T0 = 1_767_225_600_000
VALID: dict[str, Any] = {"v": 1, "service": "svc", "interval_s": 5, "ok": True}
FIELDS = [*Heartbeat.__struct_fields__, "extra", ""]

#: Number tokens JSON does not have, or that no float or int64 holds.
ODD_NUMBERS = [
    b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1e-999",
    b"9" * 400, b"-" + b"9" * 400, b"0x10", b"01", b"1.", b".5", b"+1", b"1e", b"-",
    b"18446744073709551616", b"-9223372036854775809", b"9223372036854775807",
]  # fmt: skip
#: Bytes that are not UTF-8 on their own: lone continuation, overlong, surrogate, past U+10FFFF.
BAD_UTF8 = [b"\x80", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xff"]


def check(raw: bytes) -> None:
    """The one property: a valid Heartbeat, or InvalidMessage with a reason."""
    try:
        hb = decode_heartbeat(raw)
    except InvalidMessage as exc:
        assert isinstance(exc.reason, str) and exc.reason
        assert exc.service is None or re.fullmatch(SERVICE_PATTERN, exc.service)
        return
    assert isinstance(hb, Heartbeat)
    assert len(raw) <= MESSAGE_MAX_BYTES
    # What was accepted is valid all the way: it encodes and decodes to itself, and the
    # fold takes it (an exception there would stop the aggregator just the same).
    assert decode_heartbeat(encode(hb)) == hb
    folder = Folder(FoldState())
    folder.apply(hb, T0)
    folder.expire(T0 + 10 * 86_400_000)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


@st.composite
def mutated_heartbeats(draw: st.DrawFn) -> bytes:
    """A valid heartbeat with some fields replaced by anything JSON can say."""
    body = dict(VALID)
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
        body[name] = draw(
            json_values
            | st.text(max_size=200)
            | st.sampled_from(["perpetual", "consumer", "probe", "start", "end", "healthy"])
            | st.from_regex(SERVICE_PATTERN, fullmatch=True)
        )
    return json.dumps(body).encode()


@st.composite
def spliced(draw: st.DrawFn) -> bytes:
    """Valid JSON with a hostile token spliced in somewhere: odd numbers, bad UTF-8, nesting."""
    raw = json.dumps({**VALID, "details": {"k": 1}, "error": "e"}).encode()
    at = draw(st.integers(min_value=0, max_value=len(raw)))
    depth = draw(st.integers(min_value=1, max_value=5000))
    token = draw(
        st.sampled_from(ODD_NUMBERS)
        | st.sampled_from(BAD_UTF8)
        | st.just(b"[" * depth + b"]" * depth)
        | st.just(b'{"a":' * depth + b"1" + b"}" * depth)
        | st.binary(max_size=16)
    )
    return raw[:at] + token + raw[at:]


@FUZZ
@given(st.binary(max_size=2 * MESSAGE_MAX_BYTES))
def test_random_bytes(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(mutated_heartbeats())
def test_heartbeats_with_any_field_values(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(spliced())
def test_hostile_tokens_spliced_into_valid_json(raw: bytes) -> None:
    check(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,  # far past any recursion limit, and oversize
        b'{"v":1,"service":"a","interval_s":1,"ok":true,"x":' + b"[" * 3000 + b"]" * 3000 + b"}",
        b'{"v":1,"service":"\xc3\x28","interval_s":1,"ok":true}',  # invalid UTF-8 in a string
        b'{"v":1,"service":"a","interval_s":1,"ok":true,"error":"\xed\xa0\x80"}',
        b'{"v":1,"service":"a","interval_s":1,"ok":true,"details":{"k":1e999}}',
        b'{"v":1,"service":"a","interval_s":NaN,"ok":true}',
        b'{"v":1,"service":"a","interval_s":1e-999,"ok":true}',
        b'{"v":1,"service":"a","interval_s":1,"ok":true,"details":{"k":' + b"9" * 400 + b"}}",
        b'{"v":1,"service":"a","interval_s":1,"ok":true,"intent":{"state":"deploying",'
        b'"until":"99999-01-01T00:00:00Z"}}',
        b'{"v":1,"service":"a","interval_s":1,"ok":true,"kind":"' + b"k" * 5000 + b'"}',
        b"\x00" * (MESSAGE_MAX_BYTES + 1),
        b"",
    ],
    ids=lambda raw: repr(raw[:24]),
)
def test_known_hostile_shapes(raw: bytes) -> None:
    check(raw)

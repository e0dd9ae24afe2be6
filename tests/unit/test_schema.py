import msgspec
import pytest

from healthbus.errors import InvalidMessage
from healthbus.schema import (
    SERVICE_PATTERN,
    Heartbeat,
    Transition,
    decode_heartbeat,
    encode,
    iso_ms,
    json_schemas,
)


def hb_json(**fields: object) -> bytes:
    base: dict[str, object] = {"v": 1, "service": "svc", "interval_s": 60, "ok": True}
    base.update(fields)
    return encode(base)


def test_minimal_heartbeat_decodes_with_defaults() -> None:
    hb = decode_heartbeat(hb_json())
    assert hb.kind == "perpetual" and hb.instance is None and hb.goodbye is False


def test_unknown_fields_are_ignored() -> None:
    assert decode_heartbeat(hb_json(future_field={"x": 1})).service == "svc"


@pytest.mark.parametrize(
    ("raw", "needle", "service"),
    [
        (b"not json", "malformed", None),
        (hb_json(interval_s="x"), "interval_s", "svc"),
        (hb_json(interval_s=0), "interval_s", "svc"),
        (hb_json(service="a\nb"), "service", None),
        (hb_json(service="x" * 129), "service", None),
        (hb_json(service="svc\n"), "service", None),
        (hb_json(service=""), "service", None),
        (hb_json(instance="host a"), "instance", "svc"),
        (hb_json(depends_on=["postgres", "bad name"]), "depends_on", "svc"),
        (hb_json(details={"k": "v" * 100_000}), "over", "svc"),
        (hb_json(details={str(i): i for i in range(40)}), "details", "svc"),
        (hb_json(details={"k": {"nested": 1}}), "details", "svc"),
        (hb_json(details={"ok": 1, "k" * 65: 2}), "detail name 'kkkk", "svc"),
        (hb_json(details={"": 1}), "detail name '' must be 1-64 characters", "svc"),
        (hb_json(error="e" * 2000), "error", "svc"),
        (b'{"v":1,"service":"svc","interval_s":NaN,"ok":true}', "malformed", None),
        (hb_json(interval_s=1e400), "interval_s", "svc"),
        (b"\xff\xfe", "malformed", None),
    ],
)
def test_invalid_heartbeats_are_rejected_with_reason(
    raw: bytes, needle: str, service: str | None
) -> None:
    with pytest.raises(InvalidMessage) as info:
        decode_heartbeat(raw)
    assert needle in info.value.reason
    assert info.value.service == service


def test_unknown_major_version_names_no_service() -> None:
    with pytest.raises(InvalidMessage) as info:
        decode_heartbeat(hb_json(v=2))
    assert "unknown major version v=2" in info.value.reason
    assert info.value.service is None


def test_transition_uses_from_on_the_wire() -> None:
    t = Transition(
        id="a:error:1", event="e", service="a", from_="healthy", to="error",
        at=iso_ms(1), at_ms=1, reason="r",
    )  # fmt: skip
    assert b'"from":"healthy"' in encode(t)
    assert msgspec.json.decode(encode(t), type=Transition) == t


def test_iso_ms_is_utc_with_milliseconds() -> None:
    assert iso_ms(1739829570120) == "2025-02-17T21:59:30.120Z"


def test_every_message_has_a_json_schema() -> None:
    schemas = json_schemas()
    assert set(schemas) >= {"heartbeat", "transition", "update", "service", "meta"}
    props = schemas["heartbeat"]["$defs"]["Heartbeat"]["properties"]
    assert {"v", "service", "interval_s", "ok"} <= set(props)
    assert Heartbeat.__struct_config__.frozen


def test_names_are_checked_on_every_heartbeat_not_only_the_first() -> None:
    """Valid names are remembered (the regex is the decoding's main cost); an invalid one
    is never remembered, so it is rejected however often it comes."""
    assert decode_heartbeat(hb_json(instance="host-a:1")).instance == "host-a:1"
    for _ in range(2):
        with pytest.raises(InvalidMessage, match="instance 'host a:1'"):
            decode_heartbeat(hb_json(instance="host a:1"))


def test_heartbeat_names_keep_their_pattern_in_the_json_schema() -> None:
    props = json_schemas()["heartbeat"]["$defs"]["Heartbeat"]["properties"]
    assert props["service"]["pattern"] == SERVICE_PATTERN
    assert props["depends_on"]["anyOf"][0]["items"]["pattern"] == SERVICE_PATTERN


def test_details_too_short_to_check_cannot_be_over_the_limit() -> None:
    """Short messages skip the details' size check: even numbers that grow most when
    encoded (`9e15` is `9000000000000000.0`) keep such details under the limit."""
    from healthbus.schema import _DETAILS_SURELY_SMALL, DETAILS_MAX_BYTES

    raw = b'{"v":1,"service":"s","interval_s":1,"ok":true,"details":{'
    raw += b",".join(b'"k%d":9e15' % i for i in range(32)) + b"}}"
    assert len(raw) <= _DETAILS_SURELY_SMALL
    details = decode_heartbeat(raw).details
    assert details is not None and len(encode(details)) <= DETAILS_MAX_BYTES


def test_detail_names_up_to_their_limit_decode_and_short_ones_are_shared() -> None:
    """msgspec shares short dict keys across decodes, unless the key type is constrained:
    a fleet's kept heartbeats would each hold their own copies of the same names."""
    names = {"rows": 1, "k" * 64: 2}
    first, second = (decode_heartbeat(hb_json(details=names)).details for _ in range(2))
    assert first == second == names
    assert first is not None and second is not None
    assert next(iter(first)) is next(iter(second))


def test_service_names_the_caller_tracks_are_checked_once_and_not_remembered_twice() -> None:
    from healthbus import schema

    tracked: dict[str, object] = {}
    name = "tracked-by-the-fold-only"
    assert decode_heartbeat(hb_json(service=name), tracked).service == name
    assert name not in schema._valid_names  # the fold keeps it once it folds the heartbeat
    tracked[name] = object()
    assert decode_heartbeat(hb_json(service=name, depends_on=[name]), tracked).service == name
    assert name not in schema._valid_names
    with pytest.raises(InvalidMessage, match="service 'bad name'"):
        decode_heartbeat(hb_json(service="bad name"), tracked)
    with pytest.raises(InvalidMessage, match="depends_on 'bad dep'") as info:
        decode_heartbeat(hb_json(service=name, depends_on=["bad dep"]), tracked)
    assert info.value.service == name

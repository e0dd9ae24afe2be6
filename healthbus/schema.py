"""The wire schema: every message on the bus as a msgspec Struct.

Schemas evolve only by appending optional fields; `v` is the major version and bumps only
for an incompatible change. Readers ignore unknown fields. Encoders and decoders are built
once at import and reused.
"""

from __future__ import annotations

import re
from collections.abc import Container
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

import msgspec

from healthbus.errors import InvalidMessage

__all__ = [
    "DETAILS_MAX_BYTES",
    "DETAILS_MAX_ENTRIES",
    "DETAIL_NAME_MAX",
    "ERROR_MAX_BYTES",
    "MESSAGE_MAX_BYTES",
    "RESERVED_NAMES",
    "SCHEMA_VERSION",
    "SERVICE_PATTERN",
    "STATUS_ORDER",
    "Details",
    "Heartbeat",
    "InstanceView",
    "Intent",
    "Kind",
    "Meta",
    "SelfStatus",
    "ServiceView",
    "Status",
    "Transition",
    "Update",
    "decode_heartbeat",
    "decode_meta",
    "encode",
    "iso_ms",
    "json_schemas",
    "parse_stream_id",
    "worst",
]

SCHEMA_VERSION: Final = 1
SERVICE_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,128}$"
ERROR_MAX_BYTES: Final = 1024
DETAILS_MAX_BYTES: Final = 2048
DETAILS_MAX_ENTRIES: Final = 32
DETAIL_NAME_MAX: Final = 64
MESSAGE_MAX_BYTES: Final = 8192
#: Field names of the snapshot and state hashes that are not services.
RESERVED_NAMES: Final = frozenset({"_meta", "_fold", "_commands"})

Status = Literal["unknown", "healthy", "degraded", "error"]
SelfStatus = Literal["healthy", "degraded", "error"]
Kind = Literal["perpetual", "consumer", "probe"]
#: Severity order: `worst()` picks the highest.
STATUS_ORDER: Final[dict[str, int]] = {"unknown": 0, "healthy": 1, "degraded": 2, "error": 3}

ServiceName = Annotated[str, msgspec.Meta(pattern=SERVICE_PATTERN)]
#: A heartbeat's names carry the pattern in their JSON Schema but are checked by
#: `decode_heartbeat` against a memo of names already seen valid: a regex per name per
#: heartbeat was two thirds of the decoding's cost.
_HeartbeatName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, extra_json_schema={"pattern": SERVICE_PATTERN})
]
DetailValue = float | int | str | bool | None
Details = dict[str, DetailValue]
#: Detail names are 1-DETAIL_NAME_MAX characters: said in the JSON Schema and checked by
#: `decode_heartbeat`, not by the key type: a constrained key type kept msgspec from sharing
#: the names across decoded dicts (each kept heartbeat held copies of its own).
_DETAIL_NAMES: Final = {"propertyNames": {"maxLength": DETAIL_NAME_MAX, "minLength": 1}}
_HeartbeatDetails = Annotated[
    Details, msgspec.Meta(max_length=DETAILS_MAX_ENTRIES, extra_json_schema=_DETAIL_NAMES)
]
_ViewDetails = Annotated[Details, msgspec.Meta(extra_json_schema=_DETAIL_NAMES)]


def worst(a: Status, b: Status) -> Status:
    return a if STATUS_ORDER[a] >= STATUS_ORDER[b] else b


class Intent(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """A bounded window in which this instance's silence is expected."""

    state: Literal["draining", "deploying"]
    until: datetime


class Heartbeat(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One report from a service or probe: "I ran, here is how it went".

    Its time is the stream entry ID (the Redis server's clock), never the publisher's.
    """

    v: int
    service: _HeartbeatName
    interval_s: Annotated[float, msgspec.Meta(gt=0, le=31_536_000)]
    ok: bool
    #: Free text so newer kinds do not break older aggregators; unknown kinds are judged
    #: by the perpetual rules.
    kind: Annotated[str, msgspec.Meta(max_length=32)] = "perpetual"
    instance: _HeartbeatName | None = None
    boot: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    n: Annotated[int, msgspec.Meta(ge=0)] | None = None
    status: SelfStatus | None = None
    duration_ms: Annotated[float, msgspec.Meta(ge=0, le=1e12)] | None = None
    error: Annotated[str, msgspec.Meta(max_length=ERROR_MAX_BYTES)] | None = None
    details: _HeartbeatDetails | None = None
    hint: Annotated[str, msgspec.Meta(max_length=512)] | None = None
    depends_on: Annotated[list[_HeartbeatName], msgspec.Meta(max_length=32)] | None = None
    phase: Literal["start", "end"] | None = None
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=31_536_000)] | None = None
    goodbye: bool = False
    intent: Intent | None = None


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    """A change of a service's derived status, as automations consume it.

    `id` is the idempotency key: the same change always carries the same id.
    """

    v: int = SCHEMA_VERSION
    id: str
    event: str
    service: str
    from_: Status = msgspec.field(name="from")
    to: Status
    at: str
    at_ms: int
    reason: str
    incident: str | None = None
    root_cause: str | None = None
    suppressed: bool = False
    silenced: bool = False
    flapping: bool = False
    #: On the transition that ends an incident: how long it lasted.
    incident_duration_ms: int | None = None


class InstanceView(msgspec.Struct, frozen=True, omit_defaults=True):
    """One instance of a service, as its view lists it.

    Its fields are in JSON order and may be given by position: `view` builds one per
    instance every second, and msgspec's keyword path costs more than the rest of it.
    """

    instance: str
    status: Status
    last_heartbeat: str
    last_heartbeat_ms: int
    last_duration_ms: float | None = None
    error: str | None = None
    reason: str | None = None
    #: Restarts seen (a new `boot`) and heartbeats lost (gaps in `n`) since it appeared.
    restarts: int = 0
    lost: int = 0


class ServiceView(msgspec.Struct, frozen=True):
    """One service as the snapshot shows it (one field of the snapshot hash).

    Positional like InstanceView, for the same reason: a fleet's views render every second.
    """

    name: str
    kind: str
    status: Status
    reason: str
    since: str
    last_heartbeat: str | None
    last_heartbeat_ms: int | None
    last_duration_ms: float | None = None
    expected_interval_seconds: float | None = None
    details: _ViewDetails | None = None
    error: str | None = None
    hint: str | None = None
    depends_on: list[str] | None = None
    incident: str | None = None
    flapping: bool = False
    instances: list[InstanceView] = msgspec.field(default_factory=list)
    #: The failing dependencies (deepest first) this service is affected by, if any.
    affected_by: list[str] | None = None


class Meta(msgspec.Struct, frozen=True, kw_only=True):
    """The snapshot's `_meta` field: where the fold stands and how the bus is doing."""

    v: int = SCHEMA_VERSION
    seq: int
    status: Status
    #: The heartbeats stream id read up to: the committed cursor.
    as_of: str
    #: The id of the last entry written to the updates stream ("0-0" before the first).
    update_id: str
    #: Identifies this Redis dataset's lifetime; changes when Redis restarts empty.
    gen: str
    leader: str
    epoch: int
    updated_at: str
    updated_at_ms: int
    started_at: str
    version: str
    services: int = 0
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    lag_ms: int = 0
    buffer_s: float = 0.0
    invalid: int = 0
    blind_ms: int = 0
    #: Times heartbeats were trimmed past the cursor before they were read (each also
    #: counted in `blind_ms`): the aggregator fell further behind than the stream holds.
    gaps: int = 0


class Update(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One updates-stream entry: what one commit changed, in commit order."""

    v: int = SCHEMA_VERSION
    seq: int
    gen: str
    status: Status
    services: list[ServiceView] = msgspec.field(default_factory=list)
    removed: list[str] = msgspec.field(default_factory=list)
    transitions: list[Transition] = msgspec.field(default_factory=list)
    #: Services whose only change is a fresher heartbeat: name -> last heartbeat (ms).
    fresh: dict[str, int] = msgspec.field(default_factory=dict)


_encoder = msgspec.json.Encoder()
encode = _encoder.encode

_heartbeat_decoder = msgspec.json.Decoder(Heartbeat)
#: What decoding hostile bytes may raise: msgspec's own errors, and from its C code
#: RecursionError (deeply nested arrays or objects) and UnicodeDecodeError (invalid UTF-8
#: inside a string it must check, such as `service`). Any other escape would stop the fold.
_DECODE_ERRORS = (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeError)
_details_size_encoder = msgspec.json.Encoder()
#: Details encode to at most 4.5 times their JSON text (`1e15` is `1000000000000000.0`;
#: escapes and whitespace only shrink): in a message this short they cannot be too long.
_DETAILS_SURELY_SMALL: Final = DETAILS_MAX_BYTES // 5


class _Probe(msgspec.Struct):
    """Lenient reading of a rejected entry: its version and service, if any."""

    v: Any = None
    service: Any = None


_probe_decoder = msgspec.json.Decoder(_Probe)


def decode_heartbeat(raw: bytes, tracked: Container[str] | None = None) -> Heartbeat:
    """Decode and validate one heartbeat, or raise InvalidMessage with a readable reason.

    `tracked`: service names the caller keeps (the fold's services), all seen valid before.
    They are not checked again, and a new service name is checked without being remembered
    here as well: at 100 000 services the copy cost 41 bytes a service."""
    if len(raw) > MESSAGE_MAX_BYTES:
        raise InvalidMessage(
            f"message is {len(raw)} bytes, over the {MESSAGE_MAX_BYTES}-byte limit",
            _service_of(raw),
        )
    try:
        hb = _heartbeat_decoder.decode(raw)
    except _DECODE_ERRORS as exc:
        probe = _probe(raw)
        if probe is not None and isinstance(probe.v, int) and probe.v != SCHEMA_VERSION:
            raise InvalidMessage(f"unknown major version v={probe.v}") from None
        service = probe.service if probe is not None else None
        raise InvalidMessage(f"invalid heartbeat: {exc}", _valid_name(service)) from None
    if hb.v != SCHEMA_VERSION:
        raise InvalidMessage(f"unknown major version v={hb.v}")
    known = _valid_names
    services = known if tracked is None else tracked
    if hb.service not in services and hb.service not in known:
        _check_name(hb.service, "service", None, remember=tracked is None)
    if hb.instance is not None and hb.instance not in known:
        _check_name(hb.instance, "instance", hb.service)
    if hb.depends_on:
        for name in hb.depends_on:
            if name not in services and name not in known:
                _check_name(name, "depends_on", hb.service)
    if hb.service in RESERVED_NAMES:
        raise InvalidMessage(f"service name {hb.service!r} is reserved; choose another name")
    if hb.details:
        for name in hb.details:
            if not 0 < len(name) <= DETAIL_NAME_MAX:
                raise InvalidMessage(
                    f"invalid heartbeat: detail name {name[:70]!r} must be 1-"
                    f"{DETAIL_NAME_MAX} characters",
                    hb.service,
                )
    if (
        hb.details
        and len(raw) > _DETAILS_SURELY_SMALL
        and len(_details_size_encoder.encode(hb.details)) > DETAILS_MAX_BYTES
    ):
        raise InvalidMessage(
            f"details are over {DETAILS_MAX_BYTES} bytes encoded; send fewer or shorter values",
            hb.service,
        )
    return hb


_NAME_MATCH = re.compile(SERVICE_PATTERN.strip("^$")).fullmatch
#: Names seen valid (services, instances, dependencies): most heartbeats repeat them.
_valid_names: set[str] = set()
_VALID_NAMES_MAX: Final = 1_000_000


def _check_name(name: str, field: str, service: str | None, *, remember: bool = True) -> None:
    """Remember a valid name, or reject the heartbeat naming the (valid) `service`."""
    if _NAME_MATCH(name) is None:
        raise InvalidMessage(
            f"invalid heartbeat: {field} {name[:130]!r} must be 1-128 characters of "
            "A-Z a-z 0-9 _ . : -",
            service if field != "service" else None,
        )
    if not remember:
        return
    if len(_valid_names) >= _VALID_NAMES_MAX:
        _valid_names.clear()
    _valid_names.add(name)


def _probe(raw: bytes) -> _Probe | None:
    try:
        return _probe_decoder.decode(raw)
    except _DECODE_ERRORS:
        return None


def _service_of(raw: bytes) -> str | None:
    # Skipping unknown fields is cheap; past 1 MiB the name is not worth the parse.
    probe = _probe(raw) if len(raw) <= 1 << 20 else None
    return _valid_name(probe.service) if probe is not None else None


def _valid_name(value: object) -> str | None:
    return value if isinstance(value, str) and _NAME_MATCH(value) is not None else None


_meta_decoder = msgspec.json.Decoder(Meta)


def decode_meta(raw: bytes | None) -> Meta | None:
    """The snapshot's `_meta`, or None when there is none (or it is unreadable): no data yet."""
    if raw is None:
        return None
    try:
        return _meta_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def parse_stream_id(value: str) -> tuple[int, int] | None:
    """`"<ms>-<seq>"` as a comparable pair, or None when it is not a stream id."""
    ms, sep, seq = value.partition("-")
    if not sep or not ms.isdigit() or not seq.isdigit() or len(value) > 41:
        return None
    return int(ms), int(seq)


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as an ISO-8601 UTC string with millisecond precision.

    Hot (three per service view, a fleet's views every second): the second's text is cached.
    """
    second = _ISO_SECONDS.get(ms // 1000)
    if second is None:
        second = _iso_second(ms // 1000)
    return second + _ISO_MILLIS[ms % 1000]


def _iso_second(seconds: int) -> str:
    if len(_ISO_SECONDS) >= 4096:
        _ISO_SECONDS.clear()
    text = _ISO_SECONDS[seconds] = datetime.fromtimestamp(seconds, UTC).isoformat()[:19]
    return text


_ISO_SECONDS: dict[int, str] = {}
_ISO_MILLIS: Final = tuple(f".{m:03d}Z" for m in range(1000))


def json_schemas() -> dict[str, Any]:
    """The JSON Schema of every message, so any language can publish and consume."""
    structs = {
        "heartbeat": Heartbeat,
        "transition": Transition,
        "update": Update,
        "service": ServiceView,
        "meta": Meta,
    }
    return {name: msgspec.json.schema(struct) for name, struct in structs.items()}

"""What one check of a target found, and the pure rules that grade it.

A check measures (latency, memory, queue depth, row counts); these helpers turn the numbers
into findings with the type's thresholds ("healthy below the first, degraded below the
second, error at or above it") and fold the findings into one `ProbeResult`, whose `error`
says in words why the target is not healthy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, NamedTuple

import msgspec

from healthbus.schema import DETAILS_MAX_BYTES, STATUS_ORDER, SelfStatus, encode

__all__ = [
    "DetailValue",
    "Finding",
    "ProbeResult",
    "conclude",
    "fit_details",
    "grade",
    "human_count",
    "latency_finding",
    "threshold_finding",
]

DetailValue = float | int | str | bool | None
#: The heartbeat schema's limits on `details`.
MAX_DETAILS: Final = 32
MAX_DETAIL_KEY: Final = 64


class ProbeResult(msgspec.Struct, frozen=True, kw_only=True):
    """One check's outcome; a `custom` probe's function returns one (or None for healthy).

    `ok` is False when the check itself failed (no answer, refused, wrong reply); `status`
    grades what it measured; `error` says why it is not healthy; `hint` advises a person.
    `parts` are the target's parts that are services of their own (a docket's tasks): each is
    published as `<probe name>.<part>`, depending on the probe.
    """

    status: SelfStatus = "healthy"
    ok: bool = True
    duration_ms: float | None = None
    details: dict[str, DetailValue] = msgspec.field(default_factory=dict)
    error: str | None = None
    hint: str | None = None
    parts: dict[str, ProbeResult] = msgspec.field(default_factory=dict)


class Finding(NamedTuple):
    status: SelfStatus
    reason: str


def grade(value: float, degraded: float | None, error: float | None) -> SelfStatus:
    """Healthy below `degraded`, degraded below `error`, error at or above it (None: no limit)."""
    if error is not None and value >= error:
        return "error"
    if degraded is not None and value >= degraded:
        return "degraded"
    return "healthy"


def threshold_finding(
    what: str, value: float, degraded: float | None, error: float | None, unit: str = ""
) -> Finding | None:
    """A finding when `value` passes a threshold, e.g. "stream tasks length 12000 (degraded
    at 10000)"; None while healthy."""
    status = grade(value, degraded, error)
    if status == "healthy":
        return None
    limit = error if status == "error" else degraded
    return Finding(status, f"{what} {value:g}{unit} ({status} at {limit:g}{unit})")


def latency_finding(ms: float, degraded_ms: float | None, error_ms: float | None) -> Finding | None:
    return threshold_finding("latency", round(ms, 1), degraded_ms, error_ms, " ms")


def conclude(
    findings: Iterable[Finding | None],
    *,
    duration_ms: float | None,
    details: Mapping[str, DetailValue],
    hint: str | None = None,
) -> ProbeResult:
    """The worst finding's status (an error one means the check failed: `ok` is False);
    `error` lists every finding, worst first."""
    found = sorted((f for f in findings if f is not None), key=lambda f: -STATUS_ORDER[f.status])
    status: SelfStatus = found[0].status if found else "healthy"
    return ProbeResult(
        status=status,
        ok=status != "error",
        duration_ms=duration_ms,
        details=dict(details),
        error="; ".join(f.reason for f in found) or None,
        hint=hint,
    )


def fit_details(details: Mapping[str, DetailValue]) -> dict[str, DetailValue]:
    """The first entries that fit the heartbeat's limits (32 entries, 2 KiB encoded, keys of
    at most 64 characters), so an oversized report is cut, never rejected by the bus."""
    out: dict[str, DetailValue] = {}
    for key, value in details.items():
        if len(out) == MAX_DETAILS:
            break
        key = key[:MAX_DETAIL_KEY]
        if not key:
            continue
        out[key] = value
        if len(encode(out)) > DETAILS_MAX_BYTES:
            del out[key]
            break
    return out


def human_count(n: float) -> str:
    """5400000 -> "5.4M": row counts as a person reads them."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.1f}".rstrip("0").rstrip(".") + suffix
    return f"{n:g}"

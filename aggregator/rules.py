"""Status rules: the status of one instance from its last heartbeat and its age.

Pure functions of (heartbeat, age): no I/O, no clock. The derived status is the worst of
the self-reported status, the `ok` rule, the age rule and the kind's own rules; the reason
is the worst rule's, in words a person can act on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import msgspec

from healthbus.schema import STATUS_ORDER, Details, Heartbeat, Status

__all__ = ["Rules", "judge", "next_change_ms"]

CONSUMER_ERROR_FAILURES: Final = 5
CONSUMER_DEGRADED_QUEUE: Final = 0.8


class Rules(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of the status rules (design.md defaults)."""

    degraded_after: float = 2.0
    error_after: float = 5.0
    forget_after_ms: int = 7 * 86_400_000


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.1f} s"


def _interval(hb: Heartbeat) -> str:
    return f"{hb.interval_s:g} s"


def judge(hb: Heartbeat, age_ms: int, rules: Rules) -> tuple[Status, str]:
    """The status of an instance whose last heartbeat is `hb`, `age_ms` old."""
    status: Status = "healthy"
    reason = "ok"
    for candidate, why in _findings(hb, age_ms, rules):
        if STATUS_ORDER[candidate] > STATUS_ORDER[status]:
            status, reason = candidate, why
    return status, reason


def _findings(hb: Heartbeat, age_ms: int, rules: Rules) -> Iterator[tuple[Status, str]]:
    interval_ms = hb.interval_s * 1000
    if age_ms > rules.degraded_after * interval_ms:
        late: Status = "error" if age_ms > rules.error_after * interval_ms else "degraded"
        yield late, f"no heartbeat for {_seconds(age_ms)} (expected every {_interval(hb)})"
    if not hb.ok:
        yield "error", (f"failed: {hb.error}" if hb.error else "last run failed")
    if hb.status is not None:
        yield hb.status, f"reports {hb.status}" + (f": {hb.error}" if hb.error else "")
    if hb.kind == "consumer":
        yield from _consumer(hb.details or {})
    elif hb.kind != "probe" and hb.duration_ms is not None and hb.duration_ms > interval_ms:
        yield (
            "degraded",
            f"last run took {_seconds(hb.duration_ms)}, longer than its {_interval(hb)} interval",
        )


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _consumer(details: Details) -> Iterator[tuple[Status, str]]:
    failures = _number(details.get("consecutive_failures"))
    if failures is not None and failures >= CONSUMER_ERROR_FAILURES:
        yield "error", f"{failures:g} consecutive failures"
    elif failures is not None and failures >= 1:
        yield "degraded", f"{failures:g} consecutive failure(s)"
    depth = _number(details.get("queue_depth"))
    capacity = _number(details.get("queue_capacity"))
    if depth is not None and capacity is not None and capacity > 0:
        if depth >= capacity:
            yield "error", f"queue full ({depth:g} of {capacity:g})"
        elif depth >= CONSUMER_DEGRADED_QUEUE * capacity:
            yield "degraded", f"queue at {depth / capacity:.0%} of capacity ({depth:g})"


def next_change_ms(hb: Heartbeat, age_ms: int, rules: Rules) -> int:
    """The age at which the age rule next worsens this instance (or it is forgotten)."""
    interval_ms = hb.interval_s * 1000
    for factor in (rules.degraded_after, rules.error_after):
        threshold = int(factor * interval_ms) + 1
        if age_ms < threshold:
            return threshold
    return rules.forget_after_ms + 1

"""Status rules: the status of one instance from its last heartbeat and its age.

Pure functions of (heartbeat, age): no I/O, no clock. The derived status is the worst of
the self-reported status, the `ok` rule, the age rule and the kind's own rules; the reason
is the worst rule's, in words a person can act on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import msgspec

from healthbus.config import Config
from healthbus.schema import STATUS_ORDER, Details, Heartbeat, Status

__all__ = ["Rules", "judge", "judge_age", "judge_content", "next_change_ms"]

CONSUMER_ERROR_FAILURES: Final = 5
CONSUMER_DEGRADED_QUEUE: Final = 0.8


class Rules(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of the status rules (design.md defaults).

    The bare defaults are the design's plain rules; opt-in judgement (hysteresis counts
    above 1, flap detection, quorum, adaptive grace, SLOs) comes from `Config`.
    """

    degraded_after: float = 2.0
    error_after: float = 5.0
    forget_after_ms: int = 7 * 86_400_000
    #: Consecutive heartbeats judged better (rise) or worse (fall) before a change counts.
    rise: int = 1
    fall: int = 1
    #: Per kind overrides: kind -> (rise, fall).
    hysteresis_by_kind: dict[str, tuple[int, int]] = msgspec.field(default_factory=dict)
    #: Flap detection thresholds (percent state change); a high of 0 turns it off.
    flap_high_pct: float = 0.0
    flap_low_pct: float = 0.0
    #: fnmatch pattern -> instances that must be healthy; unmatched services: worst-of.
    quorum: dict[str, int] = msgspec.field(default_factory=dict)
    #: Adaptive grace: the age rule allows an instance up to this many intervals more,
    #: learned from how late it regularly is; 0 turns it off.
    grace_max: float = 0.0
    #: SLA rollups kept per resolution (ms); 0: not written. Bare rules write none.
    sla_minute_ms: int = 0
    sla_hour_ms: int = 0
    sla_day_ms: int = 0
    #: Availability targets (percent) by fnmatch pattern; see slo.py.
    slo: dict[str, float] = msgspec.field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Config) -> Rules:
        """The rules an aggregator with `config` judges by."""
        return cls(
            degraded_after=config.degraded_after,
            error_after=config.error_after,
            forget_after_ms=int(config.forget_after_s * 1000),
            rise=config.rise,
            fall=config.fall,
            hysteresis_by_kind=dict(config.hysteresis_by_kind),
            flap_high_pct=config.flap_high_pct,
            flap_low_pct=config.flap_low_pct,
            quorum=dict(config.quorum),
            grace_max=config.grace_max,
            sla_minute_ms=int(config.sla_minute_retention_s * 1000),
            sla_hour_ms=int(config.sla_hour_retention_s * 1000),
            sla_day_ms=int(config.sla_day_retention_s * 1000),
            slo=dict(config.slo),
        )

    def counts(self, kind: str) -> tuple[int, int]:
        """(rise, fall) for a service of `kind`."""
        return self.hysteresis_by_kind.get(kind, (self.rise, self.fall))


def _seconds(ms: float) -> str:
    return f"{ms / 1000:.1f} s"


def _interval(hb: Heartbeat) -> str:
    return f"{hb.interval_s:g} s"


def judge(hb: Heartbeat, age_ms: int, rules: Rules, grace_ms: int = 0) -> tuple[Status, str]:
    """The status of an instance whose last heartbeat is `hb`, `age_ms` old; the age rule
    allows `grace_ms` more (learned lateness, see grace.py)."""
    status: Status = "healthy"
    reason = "ok"
    for candidate, why in _findings(hb, age_ms, rules, grace_ms):
        if STATUS_ORDER[candidate] > STATUS_ORDER[status]:
            status, reason = candidate, why
    return status, reason


def judge_content(hb: Heartbeat, rules: Rules) -> tuple[Status, str]:
    """What the heartbeat itself says, whatever its age: hysteresis counts these."""
    return judge(hb, 0, rules)


def judge_age(
    hb: Heartbeat, age_ms: int, rules: Rules, grace_ms: int = 0
) -> tuple[Status, str] | None:
    """The age rule alone: None while the heartbeat is recent enough."""
    interval_ms = hb.interval_s * 1000
    if age_ms > rules.degraded_after * interval_ms + grace_ms:
        error = age_ms > rules.error_after * interval_ms + grace_ms
        late: Status = "error" if error else "degraded"
        allowed = f", {_seconds(grace_ms)} of learned lateness allowed" if grace_ms else ""
        return late, (
            f"no heartbeat for {_seconds(age_ms)} (expected every {_interval(hb)}{allowed})"
        )
    return None


def _findings(
    hb: Heartbeat, age_ms: int, rules: Rules, grace_ms: int = 0
) -> Iterator[tuple[Status, str]]:
    interval_ms = hb.interval_s * 1000
    late = judge_age(hb, age_ms, rules, grace_ms)
    if late is not None:
        yield late
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


def next_change_ms(hb: Heartbeat, age_ms: int, rules: Rules, grace_ms: int = 0) -> int:
    """The age at which the age rule next worsens this instance (or it is forgotten)."""
    interval_ms = hb.interval_s * 1000
    for factor in (rules.degraded_after, rules.error_after):
        threshold = int(factor * interval_ms) + grace_ms + 1
        if age_ms < threshold:
            return threshold
    return rules.forget_after_ms + 1

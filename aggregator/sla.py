"""SLA: time-in-state accounting per service, rolled up per minute, hour and UTC day.

Time is accounted, not checks counted: a service's status holds from one transition to the
next, so the fold adds the span since a service's mark to its status's tally at each
transition, and for every service at least once a flush period (`Folder.account`). Spans
the aggregator could not see (the clock's grants) go to `blind_ms` instead, so a bus outage
is no service's downtime. The sums do not depend on where spans are cut, so the rollups
do not depend on when the runner flushed. A day's p95 duration comes from a histogram of
its heartbeats' `duration_ms` with 5 % wide buckets (the figure is within 2.5 %).

Deltas wait in a `Ledger` until the commit that writes the service's state row also adds
them to its rollup hashes (`Keys.rollup`; fields and members in healthbus/web/history.py),
in the same Lua script: a crash never loses or doubles a span. Pure: no I/O, no clock.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from aggregator.slo import record
from healthbus.schema import encode

if TYPE_CHECKING:
    from aggregator.rules import Rules
    from aggregator.state import Clock, Service

__all__ = [
    "RESOLUTIONS",
    "Ledger",
    "RollupWrite",
    "account",
    "bucket_field",
    "p95",
    "record_duration",
]

MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
RESOLUTIONS: Final = {"minute": MINUTE_MS, "hour": HOUR_MS, "day": DAY_MS}
_FORMATS: Final = {"minute": "%Y-%m-%dT%H:%M", "hour": "%Y-%m-%dT%H", "day": "%Y-%m-%d"}
#: Grants remembered to place blind time inside accounted spans.
MAX_GRANTS: Final = 64
#: Histogram buckets of durations: each 5 % wider than the one before.
BASE: Final = 1.05
_LOG_BASE: Final = math.log(BASE)
#: The bucket of the longest duration a heartbeat may carry (1e12 ms, schema.Heartbeat).
MAX_BUCKET: Final = int(math.log(1e12 + 1) / _LOG_BASE)
#: A rollup write's members when it has none to add or set.
_EMPTY: Final = b"{}"


@functools.lru_cache(maxsize=1024)
def bucket_field(resolution: str, bucket_ms: int) -> str:
    """The rollup hash field of the bucket starting at `bucket_ms`: `YYYY-MM-DD`, `…THH` or
    `…THH:MM` (UTC). Cached: the rollups of every service in a commit name the same few."""
    return time.strftime(_FORMATS[resolution], time.gmtime(bucket_ms // 1000))


@dataclass(slots=True)
class RollupWrite:
    """One field of one rollup hash to add to (and `p95`, when given, to set)."""

    resolution: str
    service: str
    field: str
    delta: bytes
    #: Members to set rather than add (JSON; `{}` for none): a day's `p95_duration_ms`,
    #: and on the day of the service's mark `through_ms` and `status`, so that a reader can
    #: add the span since (in that status) to today's figures.
    absolute: bytes
    #: Expiry of the hash, and the oldest field kept (older ones are deleted).
    ttl_ms: int
    cutoff: str


class Ledger:
    """Rollup deltas the fold owes the next commit, by service."""

    __slots__ = ("_day", "_kept", "_limits", "_marks", "_p95", "_retention", "_tallies")

    def __init__(self) -> None:
        self._tallies: dict[str, dict[tuple[str, int], dict[str, int]]] = {}
        self._p95: dict[str, dict[int, float | None]] = {}
        self._marks: dict[str, tuple[int, str]] = {}
        #: The time of the last `take`, and each written resolution's TTL and cutoff then.
        self._limits: tuple[int, dict[str, tuple[int, str]]] = (-1, {})
        self._day = 0
        self.retention = Retention(0, 0, 0)

    @property
    def retention(self) -> Retention:
        return self._retention

    @retention.setter
    def retention(self, retention: Retention) -> None:
        """Set by the Folder from its rules; `_kept` lists (resolution, bucket size, how
        long kept) of each resolution written."""
        self._retention = retention
        self._kept = tuple(
            (resolution, size, keep)
            for resolution, size in RESOLUTIONS.items()
            if (keep := retention.of(resolution))
        )
        self._limits = (-1, {})

    def services(self) -> set[str]:
        """Services with writes owed."""
        return {*self._tallies, *self._p95, *self._marks}

    def mark(self, service: str, through_ms: int, status: str) -> None:
        """`service` is accounted up to `through_ms` and is in `status` from then on."""
        if self._retention.day:
            self._marks[service] = (through_ms, status)

    def add(self, service: str, member: str, start: int, end: int) -> None:
        """Add the span [start, end) to `member` (`healthy_ms`, …, `blind_ms`) of every
        bucket it covers at each resolution, within that resolution's retention."""
        tallies = None
        for resolution, size, keep in self._kept:
            a = max(start, end - keep)
            if a >= end:
                continue
            if tallies is None:
                tallies = self._tallies.setdefault(service, {})
            while a < end:
                bucket = a - a % size
                b = min(end, bucket + size)
                tally = tallies.setdefault((resolution, bucket), {})
                tally[member] = tally.get(member, 0) + b - a
                a = b

    def incident(self, service: str, at_ms: int) -> None:
        for resolution, size, _ in self._kept:
            tallies = self._tallies.setdefault(service, {})
            tally = tallies.setdefault((resolution, at_ms - at_ms % size), {})
            tally["incidents"] = tally.get("incidents", 0) + 1

    def day_of(self, at_ms: int) -> int:
        """The start of `at_ms`'s UTC day: one int object for every service that keeps it
        (`Service.sla_day`), not one each (32 bytes a service)."""
        day = at_ms - at_ms % DAY_MS
        if day != self._day:
            self._day = day
        return self._day

    def set_p95(self, service: str, day_ms: int, value: float | None) -> None:
        self._p95.setdefault(service, {})[day_ms] = value

    def take(self, service: str, now_ms: int) -> list[RollupWrite]:
        """The writes owed for `service`, handed over to a commit part."""
        if service not in self._tallies and service not in self._p95 and service not in self._marks:
            return []  # most services of most commits: nothing to look through
        tallies = self._tallies.pop(service, {})
        absolute: dict[int, dict[str, object]] = {
            day: {"p95_duration_ms": value} for day, value in self._p95.pop(service, {}).items()
        }
        mark = self._marks.pop(service, None)
        if mark is not None:
            day = self.day_of(mark[0])
            absolute.setdefault(day, {}).update(through_ms=mark[0], status=mark[1])
        keys = sorted({*tallies, *[("day", day) for day in absolute]} if absolute else tallies)
        limits = self._limits_at(now_ms)
        out: list[RollupWrite] = []
        for key in keys:
            resolution, bucket = key
            limit = limits.get(resolution)
            if limit is None:
                continue
            tally = tallies.get(key)
            fixed = absolute.get(bucket) if resolution == "day" else None
            out.append(
                RollupWrite(
                    resolution,
                    service,
                    bucket_field(resolution, bucket),
                    encode(tally) if tally else _EMPTY,
                    encode(fixed) if fixed else _EMPTY,
                    *limit,
                )
            )
        return out

    def _limits_at(self, now_ms: int) -> dict[str, tuple[int, str]]:
        """Each written resolution's TTL and oldest field kept, as of `now_ms`: the same
        for every service of a commit."""
        at, limits = self._limits
        if at != now_ms:
            limits = {}
            for resolution, size, keep in self._kept:
                cutoff = max(0, now_ms - keep)  # its bucket's start names it too
                limits[resolution] = (keep + size, bucket_field(resolution, cutoff - cutoff % size))
            self._limits = (now_ms, limits)
        return limits


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each resolution is kept (ms); 0: that resolution is not written."""

    minute: int
    hour: int
    day: int

    def of(self, resolution: str) -> int:
        return int(getattr(self, resolution))

    @classmethod
    def of_rules(cls, rules: Rules) -> Retention:
        return cls(rules.sla_minute_ms, rules.sla_hour_ms, rules.sla_day_ms)

    @property
    def enabled(self) -> bool:
        return bool(self.minute or self.hour or self.day)


def _blind_spans(a: int, b: int, clock: Clock, blind_total: int) -> list[tuple[int, int]]:
    """The parts of [a, b) that were blind: the grants inside it, and whatever blind time
    they do not account for (older grants forgotten) at its start."""
    grants = clock.grants
    if blind_total <= 0 and (not grants or grants[-1][1] <= a):
        return []  # most spans: no blind time since, and grants come in time order
    spans = sorted((max(a, s), min(b, e)) for s, e in grants if s < b and e > a)
    placed = sum(e - s for s, e in spans)
    rest = min(blind_total - placed, b - a - placed)
    if rest <= 0:
        return spans
    out: list[tuple[int, int]] = []
    cursor = a
    for s, e in [*spans, (b, b)]:
        if rest > 0 and s > cursor:
            take = min(rest, s - cursor)
            out.append((cursor, cursor + take))
            rest -= take
        if e > s:
            out.append((s, e))
        cursor = max(cursor, e)
    return out


def account(svc: Service, end_ms: int, clock: Clock, ledger: Ledger, slo: bool = False) -> bool:
    """Add `svc`'s status to its tallies (and, with `slo`, its SLO minutes) from its mark
    up to `end_ms`; whether it moved."""
    start = svc.sla_ms
    if start is not None and end_ms <= start:
        return False
    if start is None or not (ledger.retention.enabled or slo):
        svc.sla_ms, svc.sla_off = end_ms, clock.offset_ms
        return start is None
    member = f"{svc.status}_ms"
    cursor = start
    pieces: list[tuple[str, int, int]] = []
    for s, e in _blind_spans(start, end_ms, clock, clock.offset_ms - svc.sla_off):
        if s > cursor:
            pieces.append((member, cursor, s))
        pieces.append(("blind_ms", s, e))
        cursor = max(cursor, e)
    if cursor < end_ms:
        pieces.append((member, cursor, end_ms))
    for name, a, b in pieces:
        ledger.add(svc.name, name, a, b)
        if slo:
            record(svc, name, a, b)
    svc.sla_ms, svc.sla_off = end_ms, clock.offset_ms
    ledger.mark(svc.name, end_ms, svc.status)
    if svc.sla_counts and svc.sla_day == ledger.day_of(end_ms):
        value = p95(svc.sla_lo, svc.sla_counts)
        if value != svc.sla_p95:
            svc.sla_p95 = value
            ledger.set_p95(svc.name, svc.sla_day, value)
    return True


def record_duration(svc: Service, at_ms: int, duration_ms: float, ledger: Ledger) -> None:
    """Count one heartbeat's duration toward its UTC day's p95."""
    day = ledger.day_of(at_ms)
    if day != svc.sla_day:
        if svc.sla_counts:  # yesterday's final figure
            ledger.set_p95(svc.name, svc.sla_day, p95(svc.sla_lo, svc.sla_counts))
        svc.sla_day, svc.sla_counts, svc.sla_p95 = day, None, None
    bucket = int(math.log(duration_ms + 1) / _LOG_BASE)  # = math.log(…, BASE)
    counts = svc.sla_counts
    i = bucket - svc.sla_lo
    if counts is not None and 0 <= i < len(counts):
        counts[i] += 1  # most durations: a bucket counted before
    elif counts is None:
        svc.sla_lo, svc.sla_counts = bucket, [1]
    elif i < 0:  # widened down to the bucket: at most MAX_BUCKET + 1 counts
        svc.sla_lo, svc.sla_counts = bucket, [1, *[0] * (-i - 1), *counts]
    else:
        counts += [0] * (i - len(counts))
        counts.append(1)


def p95(lo: int, counts: list[int]) -> float | None:
    """The 95th percentile of a duration histogram (bucket `lo + i` counted `counts[i]`
    times): the middle of its bucket."""
    total = sum(counts)
    if not total:
        return None
    rank = math.ceil(0.95 * total)
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            return round(float(BASE ** (lo + i + 0.5)) - 1, 1)
    return None  # unreachable: the ranks add up

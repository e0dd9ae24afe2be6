"""The SLA's arithmetic: time in each status per UTC day, and the percentages over days.

uptime % = healthy time / known time; availability % = (healthy + degraded) / known time;
known time = healthy + degraded + error. Unknown time (never seen, departed) and blind time
(the bus could not see) are left out, so an outage of the bus is never one of the service.
Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec

from healthbus.schema import Status, Transition
from healthbus.web.incidents import opens_incident

__all__ = [
    "DAY_MS",
    "Day",
    "Tally",
    "Totals",
    "date_ms",
    "day_start_ms",
    "summarize",
    "tally_transitions",
    "totals",
    "window",
]

DAY_MS = 86_400_000


@dataclass(slots=True)
class Tally:
    """One day's raw figures (milliseconds per status)."""

    ms: dict[str, int] = field(default_factory=dict)
    incidents: int = 0
    p95_duration_ms: float | None = None

    def add(self, status: str, ms: int) -> None:
        if ms > 0:
            self.ms[status] = self.ms.get(status, 0) + ms


class Day(msgspec.Struct, kw_only=True):
    date: str
    healthy_s: float
    degraded_s: float
    error_s: float
    unknown_s: float
    known_s: float
    #: None when nothing is known of that day.
    uptime_pct: float | None
    availability_pct: float | None
    incidents: int
    p95_duration_ms: float | None


class Totals(msgspec.Struct, kw_only=True):
    healthy_s: float
    degraded_s: float
    error_s: float
    known_s: float
    uptime_pct: float | None
    availability_pct: float | None
    incidents: int


def _pct(part: float, whole: float) -> float | None:
    return round(100 * part / whole, 4) if whole > 0 else None


def day_start_ms(ms: int) -> int:
    return ms - ms % DAY_MS


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).date().isoformat()


def summarize(day_ms: int, tally: Tally | None) -> Day:
    t = tally or Tally()
    healthy, degraded, error = (t.ms.get(s, 0) / 1000 for s in ("healthy", "degraded", "error"))
    known = healthy + degraded + error
    return Day(
        date=_date(day_ms),
        healthy_s=healthy,
        degraded_s=degraded,
        error_s=error,
        unknown_s=t.ms.get("unknown", 0) / 1000,
        known_s=known,
        uptime_pct=_pct(healthy, known),
        availability_pct=_pct(healthy + degraded, known),
        incidents=t.incidents,
        p95_duration_ms=t.p95_duration_ms,
    )


def totals(days: Iterable[Day]) -> Totals:
    days = list(days)
    healthy = sum(d.healthy_s for d in days)
    degraded = sum(d.degraded_s for d in days)
    error = sum(d.error_s for d in days)
    known = healthy + degraded + error
    return Totals(
        healthy_s=round(healthy, 3),
        degraded_s=round(degraded, 3),
        error_s=round(error, 3),
        known_s=round(known, 3),
        uptime_pct=_pct(healthy, known),
        availability_pct=_pct(healthy + degraded, known),
        incidents=sum(d.incidents for d in days),
    )


def tally_transitions(
    transitions: Sequence[Transition], initial: Status, start_ms: int, end_ms: int
) -> dict[int, Tally]:
    """Time in each status over `[start_ms, end_ms)`, by UTC day start, from one service's
    transitions in time order; `initial` is its status at `start_ms`. Transitions outside
    the span only move the status."""
    tallies: dict[int, Tally] = {}

    def add(status: str, a: int, b: int) -> None:
        while a < b:
            day = day_start_ms(a)
            cut = min(b, day + DAY_MS)
            tallies.setdefault(day, Tally()).add(status, cut - a)
            a = cut

    status: str = initial
    at = start_ms
    for t in transitions:
        when = min(max(t.at_ms, start_ms), end_ms)
        add(status, at, when)
        status, at = t.to, max(at, when)
        if opens_incident(t) and start_ms <= t.at_ms < end_ms:
            tallies.setdefault(day_start_ms(t.at_ms), Tally()).incidents += 1
    add(status, at, end_ms)
    return tallies


def window(end_ms: int, days: int) -> list[int]:
    """The start of each UTC day of the last `days` days up to `end_ms`, oldest first."""
    last = day_start_ms(end_ms)
    return [last - i * DAY_MS for i in range(days - 1, -1, -1)]


def date_ms(date: str) -> int | None:
    """`YYYY-MM-DD` as the ms of that UTC day's start, or None."""
    try:
        parsed = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return None
    return int(parsed.timestamp() * 1000)

"""The bus's own health, as a service (`healthbus.aggregator`) like any other.

The leading aggregator publishes a heartbeat about itself to the heartbeats stream every
`bus_interval_s`: the stream's length against the publishers' cap, how far behind the
newest entry it reads (lag), how long a batch takes from read to commit (fold latency),
the invalid entries and the gaps (entries trimmed before they were read) since its last
report, and the blind time. Because the report is an entry of the stream, the fold judges
it as it judges every service (a pure replay sees it too), and its transitions are the
bus's own: it degrades when it falls behind, and goes `degraded`/`error` by the age rule
when no aggregator led for a while (the next leader says so). Pure: figures in, JSON out.
"""

from __future__ import annotations

from typing import Final

import msgspec

from healthbus.schema import SCHEMA_VERSION, Status, encode, worst

__all__ = ["BUS_SERVICE", "STREAM_CAP", "BusMeter", "BusStats", "bus_heartbeat"]

BUS_SERVICE: Final = "healthbus.aggregator"
#: The publishers' `MAXLEN ~` guard on the heartbeats stream (publishers/_sender.py).
STREAM_CAP: Final = 1_000_000
STREAM_DEGRADED: Final = 0.5
STREAM_ERROR: Final = 0.9
LAG_DEGRADED_MS: Final = 10_000
LAG_ERROR_MS: Final = 60_000
FOLD_DEGRADED_MS: Final = 1_000
#: The first report comes this many intervals after leading (a minute by default): a
#: short-lived leader, or a short test, adds no service and no `appeared` to the fleet.
FIRST_REPORT: Final = 6


class BusStats(msgspec.Struct, kw_only=True):
    """What the runner measured since its last report."""

    leader: str
    stream_length: int
    lag_ms: int
    #: The longest read-to-commit time of a batch since the last report.
    fold_ms: float
    #: Totals since this leader started, and the increase since the last report.
    invalid: int
    invalid_new: int
    gaps: int
    gaps_new: int
    blind_ms: int
    buffer_s: float


def _findings(s: BusStats) -> list[tuple[Status, str]]:
    out: list[tuple[Status, str]] = []
    if s.stream_length >= STREAM_DEGRADED * STREAM_CAP:
        bad: Status = "error" if s.stream_length >= STREAM_ERROR * STREAM_CAP else "degraded"
        out.append(
            (bad, f"heartbeats stream holds {s.stream_length} of {STREAM_CAP}: reading too slowly")
        )
    if s.lag_ms > LAG_DEGRADED_MS:
        bad = "error" if s.lag_ms > LAG_ERROR_MS else "degraded"
        out.append((bad, f"{s.lag_ms / 1000:.1f} s behind the newest heartbeat"))
    if s.gaps_new:
        out.append(("degraded", f"{s.gaps_new} gap(s): heartbeats trimmed before they were read"))
    if s.fold_ms > FOLD_DEGRADED_MS:
        out.append(("degraded", f"a batch took {s.fold_ms / 1000:.1f} s from read to commit"))
    return out


def bus_heartbeat(stats: BusStats, interval_s: float) -> bytes:
    """The aggregator's heartbeat about itself (field `m` of a heartbeats entry)."""
    status: Status = "healthy"
    reasons: list[str] = []
    for found, why in _findings(stats):
        status = worst(status, found)
        reasons.append(why)
    details: dict[str, float | int | str] = {
        "stream_length": stats.stream_length,
        "stream_cap": STREAM_CAP,
        "lag_ms": stats.lag_ms,
        "fold_ms": round(stats.fold_ms, 1),
        "invalid": stats.invalid,
        "gaps": stats.gaps,
        "blind_ms": stats.blind_ms,
        "buffer_s": round(stats.buffer_s, 1),
        "leader": stats.leader[:200],
    }
    body: dict[str, object] = {
        "v": SCHEMA_VERSION,
        "service": BUS_SERVICE,
        "kind": "bus",
        "interval_s": interval_s,
        "ok": True,
        "status": status,
        "duration_ms": round(stats.fold_ms, 1),
        "details": details,
    }
    if reasons:
        body["error"] = "; ".join(reasons)[:1000]
    if stats.invalid_new:
        body["hint"] = f"{stats.invalid_new} invalid entries dead-lettered since the last report"
    return encode(body)


class BusMeter:
    """The runner's measurements between two reports, and when the next report is due
    (by the monotonic time the runner passes in)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.stream_length = 0
        self.fold_ms = 0.0
        self._invalid = 0
        self._gaps = 0
        self._next: float | None = None

    def folded(self, seconds: float) -> None:
        self.fold_ms = max(self.fold_ms, seconds * 1000)

    def due(self, now: float) -> bool:
        """Whether to report now (the first time FIRST_REPORT intervals after leading)."""
        if self.interval_s <= 0:
            return False
        if self._next is None:
            self._next = now + FIRST_REPORT * self.interval_s
        if now < self._next:
            return False
        self._next = now + self.interval_s
        return True

    def report(
        self, *, leader: str, lag_ms: int, invalid: int, gaps: int, blind_ms: int, buffer_s: float
    ) -> bytes:
        stats = BusStats(
            leader=leader,
            stream_length=self.stream_length,
            lag_ms=lag_ms,
            fold_ms=self.fold_ms,
            invalid=invalid,
            invalid_new=max(0, invalid - self._invalid),
            gaps=gaps,
            gaps_new=max(0, gaps - self._gaps),
            blind_ms=blind_ms,
            buffer_s=buffer_s,
        )
        self._invalid, self._gaps, self.fold_ms = invalid, gaps, 0.0
        return bus_heartbeat(stats, self.interval_s)

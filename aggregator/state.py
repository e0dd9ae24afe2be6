"""The fold's own state: what it remembers per service, and what it owes the next commit.

Times come in two clocks. `*_ms` are wall times (Redis stream entry IDs, for display and
transition stamps). `*_v` are virtual times: wall time minus the blind time granted so far,
so that time the aggregator could not see never ages a service (design.md, "Time").
"""

from __future__ import annotations

import heapq

import msgspec

from aggregator.dependencies import Graph
from aggregator.hysteresis import Held
from aggregator.sla import Ledger
from healthbus.commands import Commands
from healthbus.schema import Heartbeat, Status

__all__ = ["Clock", "FoldState", "Instance", "Pending", "Service"]

#: Deadlines are bucketed by this many virtual milliseconds.
BUCKET_MS = 100


class Instance(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    #: The last completed heartbeat (a `phase: start` never counts as one).
    hb: Heartbeat
    last_ms: int
    last_v: int
    status: Status = "unknown"
    reason: str = ""
    #: False while only a `phase: start` has been seen.
    completed: bool = True
    started_v: int | None = None
    start_timeout_ms: int | None = None
    #: What its heartbeats say, through hysteresis; None with rise = fall = 1.
    held: Held | None = None
    #: The last `depends_on` it sent: a heartbeat without one keeps it, `[]` clears it.
    depends_on: list[str] | None = None
    #: Its usual lateness (ms), restarts seen (a new `boot`) and heartbeats lost (gaps in
    #: `n`): see grace.py.
    late_ms: float = 0.0
    restarts: int = 0
    lost: int = 0


class Service(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    name: str
    kind: str
    status: Status = "unknown"
    reason: str = "never seen"
    since_ms: int
    instances: dict[str, Instance] = msgspec.field(default_factory=dict)
    incident: str | None = None
    #: Reason of the last rejected entry naming this service; cleared by a valid heartbeat.
    invalid: str | None = None
    #: Set when the last instance said goodbye: the service leaves unless one returns.
    departed_v: int | None = None
    #: Interval promised by the last heartbeat, kept for departure and forgetting.
    interval_s: float = 60.0
    last_v: int = 0
    deadline_v: int | None = None
    #: Union of the live instances' `depends_on`, sorted (a tuple: most have none, and
    #: share the empty one).
    depends_on: tuple[str, ...] = ()
    #: The deepest failing dependencies (root causes), while any fails.
    affected_by: list[str] | None = None
    #: When the open incident began, and the root cause it was opened under.
    incident_ms: int | None = None
    incident_root: str | None = None
    #: Flap detection: whether it flaps now (a flag, not a status), and the statuses of
    #: its last observations, one letter each (see flapping.py).
    flapping: bool = False
    flap_window: str = ""
    #: SLA accounting (sla.py): accounted up to this wall time, the clock's offset then,
    #: and the current UTC day's duration histogram with its last p95 written. The
    #: histogram is dense: `sla_counts[i]` counts bucket `sla_lo + i` (a dict of one
    #: bucket took 224 bytes a service, this list 64; None until a duration is seen).
    sla_ms: int | None = None
    sla_off: int = 0
    sla_day: int = 0
    sla_lo: int = 0
    sla_counts: list[int] | None = None
    sla_p95: float | None = None
    #: SLO (slo.py): accounted since, the minutes of the last six hours that were not all
    #: good (minute -> [error ms, unknown or blind ms]), and whether it burns too fast.
    slo_since: int | None = None
    slo_minutes: dict[int, list[int]] | None = None
    slo_burning: bool = False
    #: The cursor of the commit that last wrote this row: every heartbeats-stream entry up
    #: to it is folded in. A new leader re-reads from the replay position (persist.Replay),
    #: behind some rows' cursors, and skips this service's entries at or before it.
    applied: str = ""


class Clock(msgspec.Struct, kw_only=True):
    """The fold's time: a watermark that never decreases, and the blind time granted."""

    now_v: int = 0
    offset_ms: int = 0
    #: Entries read after a grant are never older than this (they arrived while blind).
    floor_v: int = 0
    #: The latest blind spans granted, [from, to) in wall time: where SLA blind time lies.
    grants: list[tuple[int, int]] = msgspec.field(default_factory=list)

    def to_v(self, wall_ms: int) -> int:
        return max(wall_ms - self.offset_ms, self.floor_v)

    def to_wall(self, v: int) -> int:
        return v + self.offset_ms


class Pending:
    """What the fold changed since the last commit, by urgency."""

    __slots__ = ("deferred", "fresh", "removed", "state", "urgent")

    def __init__(self) -> None:
        #: Status, reason, error, membership: committed and published at once.
        self.urgent: set[str] = set()
        #: Details or duration: published within about a second.
        self.deferred: set[str] = set()
        #: Only the heartbeat time: published as a compact map within about a second.
        self.fresh: set[str] = set()
        self.removed: set[str] = set()
        #: Services whose fold state must be written with the next commit (the cursor's).
        self.state: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.urgent or self.deferred or self.fresh or self.removed or self.state)

    def shrink(self) -> None:
        """Give back the tables of emptied sets. A set never shrinks as names are taken out
        one by one (as the flush does), so a fleet flushed once kept tables its own size."""
        for names in (self.deferred, self.fresh, self.state):
            if not names:
                names.clear()


class FoldState:
    """Everything the fold owns. Mutated in place: copying 100k services per message is slow."""

    def __init__(self) -> None:
        self.services: dict[str, Service] = {}
        self.clock = Clock()
        self.pending = Pending()
        self.counts: dict[Status, int] = {"unknown": 0, "healthy": 0, "degraded": 0, "error": 0}
        #: Dependants of each service, rebuilt from `Service.depends_on` on load.
        self.graph = Graph()
        #: Operator commands folded so far (silences), with their stream's cursor.
        self.commands = Commands()
        #: SLA rollup deltas owed to the next commit (sla.py).
        self.ledger = Ledger()
        self._buckets: dict[int, set[str]] = {}
        self._heap: list[int] = []

    def schedule(self, service: Service, deadline_v: int | None) -> None:
        """Move `service` to the bucket of its next deadline (or none)."""
        old = service.deadline_v
        if old is not None:
            bucket = self._buckets.get(old // BUCKET_MS)
            if bucket is not None:
                bucket.discard(service.name)
        service.deadline_v = deadline_v
        if deadline_v is not None:
            key = deadline_v // BUCKET_MS
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = set()
                heapq.heappush(self._heap, key)
            bucket.add(service.name)

    def any_due(self, now_v: int) -> bool:
        """Whether a deadline may be at or before `now_v` (its bucket is)."""
        return bool(self._heap) and self._heap[0] <= now_v // BUCKET_MS

    def due(self, now_v: int) -> list[Service]:
        """Services whose deadline is at or before `now_v`, earliest bucket first."""
        out: list[Service] = []
        limit = now_v // BUCKET_MS
        while self._heap and self._heap[0] <= limit:
            key = self._heap[0]
            bucket = self._buckets.get(key, set())
            later: set[str] = set()
            for name in bucket:
                svc = self.services.get(name)
                if svc is None or svc.deadline_v is None:
                    continue
                if svc.deadline_v <= now_v:
                    out.append(svc)
                else:
                    later.add(name)
            if later:
                self._buckets[key] = later
                break
            heapq.heappop(self._heap)
            self._buckets.pop(key, None)
        out.sort(key=lambda s: (s.deadline_v or 0, s.name))
        return out

    def next_deadline_v(self) -> int | None:
        while self._heap and not self._buckets.get(self._heap[0]):
            self._buckets.pop(heapq.heappop(self._heap), None)
        if not self._heap:
            return None
        return min(
            (d for n in self._buckets[self._heap[0]] if (d := self.services[n].deadline_v)),
            default=self._heap[0] * BUCKET_MS,
        )

    def set_status(self, service: Service, status: Status) -> None:
        if service.name in self.services:
            self.counts[service.status] -= 1
            self.counts[status] += 1
        service.status = status

    def add(self, service: Service) -> None:
        self.services[service.name] = service
        self.counts[service.status] += 1
        self.graph.link(service.name, (), service.depends_on)

    def remove(self, service: Service) -> None:
        self.schedule(service, None)
        self.counts[service.status] -= 1
        self.graph.link(service.name, service.depends_on, ())
        del self.services[service.name]

"""The fold's own state: what it remembers per service, and what it owes the next commit.

Times come in two clocks. `*_ms` are wall times (Redis stream entry IDs, for display and
transition stamps). `*_v` are virtual times: wall time minus the blind time granted so far,
so that time the aggregator could not see never ages a service (design.md, "Time").
"""

from __future__ import annotations

import heapq
from collections.abc import Collection

import msgspec

from aggregator.dependencies import Graph
from aggregator.hysteresis import Held
from aggregator.sla import Ledger
from healthbus.commands import Commands
from healthbus.schema import Heartbeat, Status

__all__ = ["Clock", "FoldState", "Instance", "Pending", "Service"]

#: Deadlines are bucketed by this many virtual milliseconds.
BUCKET_MS = 100
#: Names left behind in buckets that may pile up before they are all listed anew.
STALE_SLACK = 1024


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

    @property
    def key(self) -> str:
        """Its name within the service ("" for a service run as one unnamed instance)."""
        return self.hb.instance or ""


class Service(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    name: str
    kind: str
    status: Status = "unknown"
    reason: str = "never seen"
    since_ms: int
    #: Its instances (see `find`, `each`): the only one in `sole`, two or more in
    #: `several` by name. Most services run as one, and a dict of one took 184 bytes.
    #: A state row holds either in `instances`, as every version wrote it (persist.py).
    sole: Instance | None = None
    several: dict[str, Instance] | None = msgspec.field(default=None, name="instances")
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

    def find(self, key: str) -> Instance | None:
        if self.several is not None:
            return self.several.get(key)
        sole = self.sole
        # Not `sole.key`: a property call is a tenth of a steady heartbeat's lookup.
        return sole if sole is not None and (sole.hb.instance or "") == key else None

    def each(self) -> Collection[Instance]:
        """Its live instances (a view: do not change them while iterating)."""
        if self.several is not None:
            return self.several.values()
        return () if self.sole is None else (self.sole,)

    def put(self, inst: Instance) -> None:
        """Add `inst`, or put it in the place of the instance of its name."""
        if self.several is not None:
            self.several[inst.key] = inst
        elif self.sole is None or self.sole.key == inst.key:
            self.sole = inst
        else:
            self.several = {self.sole.key: self.sole, inst.key: inst}
            self.sole = None

    def drop(self, key: str) -> Instance | None:
        """Remove the instance named `key`; the one it took away, if any."""
        several = self.several
        if several is None:
            sole = self.find(key)
            if sole is not None:
                self.sole = None
            return sole
        gone = several.pop(key, None)
        self.settle()
        return gone

    def settle(self) -> None:
        """Keep `several` for two or more instances (a state row holds one there too)."""
        several = self.several
        if several is not None and len(several) < 2:
            self.several, self.sole = None, next(iter(several.values()), None)


class Clock(msgspec.Struct, kw_only=True):
    """The fold's time: a watermark that never decreases, and the blind time granted."""

    now_v: int = 0
    offset_ms: int = 0
    #: Entries read after a grant are never older than this (they arrived while blind).
    floor_v: int = 0
    #: The latest blind spans granted, [from, to) in wall time: where SLA blind time lies.
    grants: list[tuple[int, int]] = msgspec.field(default_factory=list)

    def to_v(self, wall_ms: int) -> int:
        # With no blind time granted, the wall time itself: an instance keeps both, and
        # `wall_ms - 0` would be an int object of its own (32 bytes a service).
        v = wall_ms - self.offset_ms if self.offset_ms else wall_ms
        return v if v >= self.floor_v else self.floor_v

    def to_wall(self, v: int) -> int:
        # As `to_v`: a transition's time becomes the service's `since_ms` and `sla_ms`.
        return v + self.offset_ms if self.offset_ms else v


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
        #: Deadline buckets: names by deadline // BUCKET_MS, with a heap of the keys.
        #: Lists, not sets: a name moved to another bucket stays listed in the old one
        #: until it comes due or the lists are rebuilt (a set cost 48-80 bytes a service).
        self._buckets: dict[int, list[str]] = {}
        self._heap: list[int] = []
        self._listed = 0

    def schedule(self, service: Service, deadline_v: int | None) -> None:
        """Move `service` to the bucket of its next deadline (or none).

        Invariant: a service whose `deadline_v` is set is listed in that bucket."""
        old = service.deadline_v
        service.deadline_v = deadline_v
        if deadline_v is None:
            return
        key = deadline_v // BUCKET_MS
        if old is not None and old // BUCKET_MS == key:
            return
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = []
            heapq.heappush(self._heap, key)
        bucket.append(service.name)
        self._listed += 1
        if self._listed > 2 * len(self.services) + STALE_SLACK:
            self._relist()

    def _relist(self) -> None:
        """List every scheduled service once again, dropping the names left behind."""
        self._buckets, self._heap, self._listed = {}, [], 0
        for service in self.services.values():
            deadline_v, service.deadline_v = service.deadline_v, None
            self.schedule(service, deadline_v)

    def any_due(self, now_v: int) -> bool:
        """Whether a deadline may be at or before `now_v` (its bucket is)."""
        return bool(self._heap) and self._heap[0] <= now_v // BUCKET_MS

    def due(self, now_v: int) -> list[tuple[int, Service]]:
        """Services whose deadline is at or before `now_v`, with it, earliest first.

        Each is taken off its bucket (`deadline_v` None) until the fold schedules it again."""
        out: dict[str, tuple[int, Service]] = {}
        limit = now_v // BUCKET_MS
        services = self.services
        while self._heap and self._heap[0] <= limit:
            key = self._heap[0]
            bucket = self._buckets.get(key, [])
            later: list[str] = []
            for name in bucket:
                svc = services.get(name)
                if svc is None or svc.deadline_v is None or svc.deadline_v // BUCKET_MS != key:
                    continue  # left behind: it moved or left, or was taken off already
                if svc.deadline_v <= now_v:
                    out[name] = (svc.deadline_v, svc)
                else:
                    later.append(name)
            if later:
                later = list(dict.fromkeys(later))
                self._listed -= len(bucket) - len(later)
                self._buckets[key] = later
                break
            heapq.heappop(self._heap)
            self._buckets.pop(key, None)
            self._listed -= len(bucket)
        for _, svc in out.values():
            svc.deadline_v = None
        return sorted(out.values(), key=lambda d: (d[0], d[1].name))

    def next_deadline_v(self) -> int | None:
        while self._heap:
            key = self._heap[0]
            deadlines = [
                d
                for name in self._buckets.get(key, ())
                if (svc := self.services.get(name)) is not None
                and (d := svc.deadline_v) is not None
                and d // BUCKET_MS == key
            ]
            if deadlines:
                return min(deadlines)
            heapq.heappop(self._heap)
            self._listed -= len(self._buckets.pop(key, ()))
        return None

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

"""What to tell one destination: pure decisions from transitions, open incidents and a clock.

No I/O and no hidden clock, so every rule here is tested without Redis. The runner feeds a
batch (the transitions that arrived together), the destination's open incidents as last
committed, and the Redis server's time; it gets back the lines of one message, the
idempotency keys that message covers, and the incident records to write once it was sent.

The rules, per destination:
- an alert goes out when a service turns degraded or error and the route wants it (service
  pattern, status, kind, event; not silenced); it opens an incident record;
- a suppressed dependant (it carries `root_cause`) is named under its root cause, never
  alone: a batch of nothing but suppressed dependants sends nothing;
- a resolve goes out whenever an incident this destination was alerted about ends (the
  service recovered or left), whatever the filters and silences say;
- a reminder repeats an open incident every `repeat_ms` until it ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Literal

import msgspec

from healthbus.config import NotifyRoute
from healthbus.schema import ServiceView, Status, Transition

__all__ = [
    "FAILING",
    "Line",
    "OpenIncident",
    "Plan",
    "event_of",
    "plan_batch",
    "plan_reminders",
    "wants_service",
]

FAILING: frozenset[Status] = frozenset({"degraded", "error"})
EVENT_PREFIX = "healthbus.service."
#: Skipped unless a route names it.
QUIET_EVENTS = frozenset({"appeared"})

LineKind = Literal["alert", "affected", "resolve", "reminder", "info"]


class OpenIncident(msgspec.Struct, frozen=True, kw_only=True):
    """An incident this destination was alerted about; kept until its resolve was sent."""

    incident: str
    service: str
    status: Status
    #: When the first alert's transition happened.
    since_ms: int
    reason: str
    root_cause: str | None = None
    #: When the last message about it (alert or reminder) was sent.
    sent_ms: int
    repeats: int = 0
    #: A later transition of it was silenced: no reminders.
    silenced: bool = False


class Line(msgspec.Struct, frozen=True, kw_only=True):
    """One thing a message says, with its idempotency key."""

    kind: LineKind
    key: str
    service: str
    event: str
    status: Status
    previous: Status
    #: When it happened (the transition's time; for reminders the incident's start).
    at_ms: int
    #: When the incident began.
    since_ms: int
    reason: str
    error: str | None = None
    hint: str | None = None
    root_cause: str | None = None


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    lines: tuple[Line, ...] = ()
    #: Incident records to write (alerted or changed) and to drop (resolved).
    upserts: Mapping[str, OpenIncident] = msgspec.field(default_factory=dict)
    closes: frozenset[str] = frozenset()

    @property
    def keys(self) -> list[str]:
        return [line.key for line in self.lines]

    @property
    def changes_state(self) -> bool:
        return bool(self.upserts or self.closes)


def event_of(t: Transition) -> str:
    """`healthbus.service.error` -> `error`."""
    return t.event.removeprefix(EVENT_PREFIX)


def wants_service(route: NotifyRoute, service: str) -> bool:
    return any(fnmatchcase(service, pattern) for pattern in route.services)


def _wants_event(route: NotifyRoute, event: str) -> bool:
    return event in route.events if route.events else event not in QUIET_EVENTS


def _wants_kind(route: NotifyRoute, view: ServiceView | None) -> bool:
    return not route.kinds or (view.kind if view else "perpetual") in route.kinds


def plan_batch(
    batch: Sequence[tuple[Transition, ServiceView | None]],
    records: Mapping[str, OpenIncident],
    route: NotifyRoute,
    now_ms: int,
) -> Plan:
    """One message (maybe empty) for the transitions that arrived together, in their order."""
    plan = _plan(batch, records, route, now_ms, dependants=True)
    if plan.lines and all(line.kind == "affected" for line in plan.lines):
        # Nothing but dependants of a root cause alerted before: they add no news.
        return _plan(batch, records, route, now_ms, dependants=False)
    return plan


def _plan(
    batch: Sequence[tuple[Transition, ServiceView | None]],
    records: Mapping[str, OpenIncident],
    route: NotifyRoute,
    now_ms: int,
    *,
    dependants: bool,
) -> Plan:
    open_ = dict(records)
    lines: list[Line] = []
    upserts: dict[str, OpenIncident] = {}
    closes: set[str] = set()
    for t, view in batch:
        if not wants_service(route, t.service):
            continue
        event = event_of(t)
        incident = t.incident or t.service
        record = open_.get(incident)
        if t.from_ == t.to:
            if _wants_event(route, event):
                lines.append(_line("info", t, event, view, since_ms=t.at_ms))
        elif t.to not in FAILING:
            if record is not None:
                lines.append(_line("resolve", t, event, view, since_ms=record.since_ms))
                del open_[incident]
                upserts.pop(incident, None)
                closes.add(incident)
            elif _wants_event(route, event) and (event != "recovered" or event in route.events):
                lines.append(_line("info", t, event, view, since_ms=t.at_ms))
        else:
            dependant = t.suppressed and t.root_cause is not None
            wanted = (
                not t.silenced
                and t.to in route.statuses
                and _wants_event(route, event)
                and (record is not None or _wants_kind(route, view))
                and (dependants or not dependant)
            )
            if record is not None:
                record = msgspec.structs.replace(
                    record, status=t.to, reason=t.reason, silenced=t.silenced
                )
            elif wanted:
                record = OpenIncident(
                    incident=incident,
                    service=t.service,
                    status=t.to,
                    since_ms=t.at_ms,
                    reason=t.reason,
                    root_cause=t.root_cause,
                    sent_ms=now_ms,
                )
            else:
                continue
            if wanted:
                kind: LineKind = "affected" if dependant else "alert"
                lines.append(_line(kind, t, event, view, since_ms=record.since_ms))
                record = msgspec.structs.replace(record, sent_ms=now_ms)
            open_[incident] = upserts[incident] = record
            closes.discard(incident)
    return Plan(lines=tuple(lines), upserts=upserts, closes=frozenset(closes))


def plan_reminders(
    records: Mapping[str, OpenIncident],
    repeat_ms: int,
    now_ms: int,
    skip: frozenset[str] = frozenset(),
) -> Plan:
    """A reminder of every open incident not mentioned for `repeat_ms` (0: never), except
    those whose key is in `skip` (already sent)."""
    if repeat_ms <= 0:
        return Plan()
    due = sorted(
        (
            r
            for r in records.values()
            if not r.silenced and now_ms - r.sent_ms >= repeat_ms and _repeat_key(r) not in skip
        ),
        key=lambda r: (r.since_ms, r.service),
    )
    lines = tuple(
        Line(
            kind="reminder",
            key=_repeat_key(r),
            service=r.service,
            event="reminder",
            status=r.status,
            previous=r.status,
            at_ms=r.since_ms,
            since_ms=r.since_ms,
            reason=r.reason,
            root_cause=r.root_cause,
        )
        for r in due
    )
    upserts = {
        r.incident: msgspec.structs.replace(r, sent_ms=now_ms, repeats=r.repeats + 1) for r in due
    }
    return Plan(lines=lines, upserts=upserts)


def _repeat_key(record: OpenIncident) -> str:
    return f"{record.incident}:repeat:{record.repeats + 1}"


def _line(
    kind: LineKind, t: Transition, event: str, view: ServiceView | None, *, since_ms: int
) -> Line:
    current = view is not None and view.status == t.to
    error = view.error if current and view is not None else None
    return Line(
        kind=kind,
        key=t.id,
        service=t.service,
        event=event,
        status=t.to,
        previous=t.from_,
        at_ms=t.at_ms,
        since_ms=since_ms,
        reason=t.reason,
        error=error if error and error not in t.reason else None,
        hint=view.hint if current and view is not None else None,
        root_cause=t.root_cause,
    )

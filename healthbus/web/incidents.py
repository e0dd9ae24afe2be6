"""Incidents: the transitions that share an `incident` id, as one outage with a duration.

The aggregator opens an incident with a service's first `degraded` or `error` after being
healthy (or unseen), stamps its id on every transition until the service is healthy again or
leaves, and then starts no other until the next failure. Pure: transitions in, incidents out.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from healthbus.schema import STATUS_ORDER, Status, Transition, iso_ms, parse_stream_id

__all__ = ["Grouper", "Incident", "opens_incident"]

_FAILING: Final = frozenset({"degraded", "error"})
_CLEAR: Final = frozenset({"healthy", "unknown"})


def opens_incident(t: Transition) -> bool:
    return t.incident is not None and t.from_ in _CLEAR and t.to in _FAILING


class Incident(msgspec.Struct, kw_only=True):
    id: str
    service: str
    status: Literal["open", "resolved"]
    #: None when the stream no longer holds the opening transition.
    opened: str | None
    opened_ms: int | None
    updated: str
    updated_ms: int
    resolved: str | None
    resolved_ms: int | None
    #: Resolved minus opened; for an open incident, until `now`.
    duration_s: float | None
    worst: Status
    root_cause: str | None
    #: Oldest first.
    transitions: list[Transition]


def _incident(transitions: list[Transition], now_ms: int) -> Incident:
    """One incident from its transitions, oldest first."""
    first, last = transitions[0], transitions[-1]
    opened_ms = first.at_ms if opens_incident(first) else None
    resolved_ms = last.at_ms if last.to in _CLEAR else None
    end_ms = resolved_ms if resolved_ms is not None else now_ms
    worst: Status = "unknown"
    for t in transitions:
        if STATUS_ORDER[t.to] > STATUS_ORDER[worst]:
            worst = t.to
    return Incident(
        id=first.incident or "",
        service=first.service,
        status="open" if resolved_ms is None else "resolved",
        opened=iso_ms(opened_ms) if opened_ms is not None else None,
        opened_ms=opened_ms,
        updated=last.at,
        updated_ms=last.at_ms,
        resolved=last.at if resolved_ms is not None else None,
        resolved_ms=resolved_ms,
        duration_s=max(0, end_ms - opened_ms) / 1000 if opened_ms is not None else None,
        worst=worst,
        root_cause=next((t.root_cause for t in transitions if t.root_cause), None),
        transitions=transitions,
    )


class Grouper:
    """Takes transitions newest first (as a scan reads them); an incident is complete when
    its opening transition arrives, since every later one of it was read before."""

    def __init__(self, now_ms: int, service: str | None = None) -> None:
        self.now_ms = now_ms
        self.service = service
        #: Incident id -> (stream id of its oldest transition read, its transitions newest first).
        self._partial: dict[str, tuple[str, list[Transition]]] = {}

    def add(self, stream_id: str, t: Transition) -> Incident | None:
        """The incident `t` completes, if it opens one."""
        if t.incident is None or (self.service is not None and t.service != self.service):
            return None
        _, seen = self._partial.get(t.incident, (stream_id, []))
        seen.append(t)
        if opens_incident(t):
            self._partial.pop(t.incident, None)
            return _incident(seen[::-1], self.now_ms)
        self._partial[t.incident] = (stream_id, seen)
        return None

    def leftovers(self) -> list[tuple[str, Incident]]:
        """Incidents whose opening the stream no longer holds, keyed by their oldest
        transition's stream id, newest first: what remains once a scan reached the start."""
        rest = [(sid, _incident(seen[::-1], self.now_ms)) for sid, seen in self._partial.values()]
        self._partial.clear()
        rest.sort(key=lambda pair: parse_stream_id(pair[0]) or (0, 0), reverse=True)
        return rest

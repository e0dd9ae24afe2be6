"""`GET /metrics`: the snapshot in the Prometheus text format (0.0.4), from the replica.

Per service (labels `service`, `kind`): a one-hot status gauge, heartbeat age, last
duration, promised interval, and the queue figures consumers put in their details. For the
bus: its freshness, lag, replay buffer, invalid entries and blind time, as the aggregator's
`_meta` reports them, and this worker's SSE clients. Rendering is pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from healthbus.schema import STATUS_ORDER, Meta
from healthbus.web.hub import Hub
from healthbus.web.replica import Replica
from healthbus.web.routes import NO_STORE
from healthbus.web.selection import withholds_details
from healthbus.web.session import protected

__all__ = ["CONTENT_TYPE", "BusFigures", "escape", "metrics", "render_metrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: Numeric details exported as gauges: detail key -> (metric name, help).
DETAIL_GAUGES: Final = {
    "queue_depth": ("healthbus_service_queue_depth", "Messages waiting, as the consumer reports."),
    "queue_capacity": ("healthbus_service_queue_capacity", "The queue's capacity."),
    "consecutive_failures": (
        "healthbus_service_consecutive_failures",
        "Failures in a row, as the consumer reports.",
    ),
}


@dataclass(frozen=True, slots=True)
class BusFigures:
    now_ms: int
    stale: bool
    sse_clients: int
    sse_dropped: int = 0
    #: Entries written to idle clients by the hub itself, and queued for a client's task.
    sse_direct: int = 0
    sse_queued: int = 0


def escape(value: str) -> str:
    """A label value as the text format needs it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.head = f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"
        self.name = name
        self.lines: list[str] = []

    def add(self, value: float, labels: Iterable[tuple[str, str]] = ()) -> None:
        pairs = ",".join(f'{k}="{escape(v)}"' for k, v in labels)
        self.lines.append(
            f"{self.name}{{{pairs}}} {_number(value)}\n"
            if pairs
            else f"{self.name} {_number(value)}\n"
        )

    def text(self) -> str:
        return self.head + "".join(self.lines) if self.lines else ""


def render_metrics(replica: Replica, bus: BusFigures, *, details: bool) -> bytes:
    """The exposition; `details=False` leaves out the figures taken from `details`."""
    status = _Family(
        "healthbus_service_status",
        "gauge",
        "1 for the service's current status (healthy, degraded, error, unknown), 0 for the others.",
    )
    age = _Family(
        "healthbus_service_heartbeat_age_seconds",
        "gauge",
        "Seconds since the service's last heartbeat, by the Redis clock.",
    )
    duration = _Family(
        "healthbus_service_last_duration_seconds",
        "gauge",
        "How long the service's last reported run took.",
    )
    interval = _Family(
        "healthbus_service_interval_seconds",
        "gauge",
        "The heartbeat cadence the service promises.",
    )
    gauges = {key: _Family(name, "gauge", text) for key, (name, text) in DETAIL_GAUGES.items()}
    for name in replica.ordered():
        view = replica.views[name]
        labels = (("service", name), ("kind", view.kind))
        for s in STATUS_ORDER:
            status.add(1 if view.status == s else 0, (*labels, ("status", s)))
        if view.last_heartbeat_ms is not None:
            age.add(max(0, bus.now_ms - view.last_heartbeat_ms) / 1000, labels)
        if view.last_duration_ms is not None:
            duration.add(view.last_duration_ms / 1000, labels)
        if view.expected_interval_seconds is not None:
            interval.add(view.expected_interval_seconds, labels)
        if details and view.details:
            for key, family in gauges.items():
                value = view.details.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    family.add(value, labels)
    services = _Family("healthbus_services", "gauge", "Services by current status.")
    for s in STATUS_ORDER:
        services.add(replica.counts.get(s, 0), (("status", s),))
    parts = [status, age, duration, interval, *gauges.values(), services]
    parts += _bus(replica.meta, bus)
    return "".join(p.text() for p in parts).encode()


def _bus(meta: Meta | None, bus: BusFigures) -> list[_Family]:
    up = _Family(
        "healthbus_bus_up",
        "gauge",
        "1 while this web worker reaches Redis and the aggregator keeps the snapshot fresh.",
    )
    up.add(0 if bus.stale else 1)
    clients = _Family("healthbus_sse_clients", "gauge", "Open SSE streams of this web worker.")
    clients.add(bus.sse_clients)
    dropped = _Family(
        "healthbus_sse_clients_dropped_total",
        "counter",
        "SSE clients of this web worker dropped for falling too far behind.",
    )
    dropped.add(bus.sse_dropped)
    deliveries = _Family(
        "healthbus_sse_deliveries_total",
        "counter",
        "Updates entries delivered to SSE clients: written by the hub to an idle client's "
        'connection (path="direct") or queued for its own task (path="queued").',
    )
    deliveries.add(bus.sse_direct, [("path", "direct")])
    deliveries.add(bus.sse_queued, [("path", "queued")])
    families = [up, clients, dropped, deliveries]
    if meta is None:
        return families
    figures = [
        (
            "healthbus_bus_snapshot_age_seconds",
            "gauge",
            "Seconds since the aggregator last refreshed the snapshot.",
            max(0, bus.now_ms - meta.updated_at_ms) / 1000,
        ),
        (
            "healthbus_bus_lag_seconds",
            "gauge",
            "How far the aggregator's reads trail the newest heartbeat.",
            meta.lag_ms / 1000,
        ),
        (
            "healthbus_bus_buffer_seconds",
            "gauge",
            "Heartbeats kept behind the aggregator's cursor, in seconds of traffic.",
            meta.buffer_s,
        ),
        (
            "healthbus_bus_invalid_total",
            "counter",
            "Heartbeats rejected and dead-lettered.",
            meta.invalid,
        ),
        (
            "healthbus_bus_blind_seconds_total",
            "counter",
            "Time the aggregator could not see the bus, granted to no service's age.",
            meta.blind_ms / 1000,
        ),
        (
            "healthbus_bus_commits_total",
            "counter",
            "Commits that changed services or added transitions.",
            meta.seq,
        ),
    ]
    for name, kind, text, value in figures:
        family = _Family(name, kind, text)
        family.add(value)
        families.append(family)
    return families


@protected
async def metrics(request: Request) -> Response:
    hub: Hub = request.state.hub
    body = render_metrics(
        hub.replica,
        BusFigures(
            now_ms=hub.redis_now_ms(),
            stale=hub.stale,
            sse_clients=hub.subscribers,
            sse_dropped=hub.dropped,
            sse_direct=hub.deliveries[0],
            sse_queued=hub.deliveries[1],
        ),
        details=not withholds_details(request.state.config, request.headers),
    )
    return Response(body, media_type=CONTENT_TYPE, headers=NO_STORE)

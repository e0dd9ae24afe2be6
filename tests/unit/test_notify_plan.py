"""The notification rules, pure: what one destination is told, and what it remembers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from healthbus.config import NotifyRoute
from healthbus.notify.plan import OpenIncident, Plan, plan_batch, plan_reminders
from healthbus.schema import ServiceView, Status, Transition
from tests.webserver import transition, view

AT = 1_700_000_000_000
ROUTE = NotifyRoute(url="json://127.0.0.1/hook")


def t(service: str, from_: Status, to: Status, at: int = AT, **fields: Any) -> Transition:
    incident = fields.pop("incident", f"{service}:1")
    return msgspec.structs.replace(transition(service, from_, to, at, incident=incident), **fields)


def plan(
    batch: Sequence[Transition],
    records: dict[str, OpenIncident] | None = None,
    route: NotifyRoute = ROUTE,
    views: dict[str, ServiceView] | None = None,
) -> Plan:
    items = [(x, (views or {}).get(x.service)) for x in batch]
    return plan_batch(items, records or {}, route, AT + 1000)


def kinds(p: Plan) -> list[tuple[str, str]]:
    return [(line.kind, line.service) for line in p.lines]


def apply(records: dict[str, OpenIncident], p: Plan) -> dict[str, OpenIncident]:
    out = {**records, **p.upserts}
    return {k: v for k, v in out.items() if k not in p.closes}


def test_an_alert_opens_an_incident_and_its_recovery_resolves_it() -> None:
    alert = plan([t("db", "healthy", "error")])
    assert kinds(alert) == [("alert", "db")] and alert.keys == ["db:error:1700000000000"]
    record = alert.upserts["db:1"]
    assert (record.status, record.since_ms, record.sent_ms) == ("error", AT, AT + 1000)
    resolve = plan([t("db", "error", "healthy", AT + 5000)], apply({}, alert))
    assert kinds(resolve) == [("resolve", "db")] and resolve.closes == {"db:1"}
    assert resolve.lines[0].since_ms == AT


def test_appeared_is_skipped_unless_a_route_asks_for_it() -> None:
    appeared = t("db", "unknown", "healthy", event="healthbus.service.appeared", incident=None)
    assert plan([appeared]).lines == ()
    route = NotifyRoute(url="json://x", events=("appeared",))
    assert kinds(plan([appeared], route=route)) == [("info", "db")]


def test_a_recovery_nobody_was_alerted_about_says_nothing() -> None:
    assert plan([t("db", "error", "healthy")]).lines == ()


def test_routes_filter_by_service_pattern_status_and_kind() -> None:
    route = NotifyRoute(url="json://x", services=("db*",), statuses=("error",), kinds=("probe",))
    views = {"db-main": view("db-main", "error", kind="probe"), "dbx": view("dbx", kind="consumer")}
    batch = [
        t("db-main", "healthy", "error"),
        t("db-replica", "healthy", "degraded"),  # status not routed
        t("dbx", "healthy", "error"),  # kind not routed
        t("api", "healthy", "error"),  # name not routed
    ]
    assert kinds(plan(batch, route=route, views=views)) == [("alert", "db-main")]


def test_a_silenced_alert_is_not_sent_but_a_resolve_is_never_swallowed() -> None:
    assert plan([t("db", "healthy", "error", silenced=True)]) == Plan()
    records = apply({}, plan([t("db", "healthy", "degraded")]))
    escalated = plan([t("db", "degraded", "error", silenced=True)], records)
    assert escalated.lines == () and escalated.upserts["db:1"].silenced
    recovered = t("db", "error", "healthy", silenced=True)
    assert kinds(plan([recovered], apply(records, escalated))) == [("resolve", "db")]


def test_a_change_the_route_does_not_want_updates_the_record_quietly() -> None:
    route = NotifyRoute(url="json://x", statuses=("error",))
    records = apply({}, plan([t("db", "healthy", "error")], route=route))
    better = plan([t("db", "error", "degraded")], records, route=route)
    assert better.lines == () and better.upserts["db:1"].status == "degraded"
    assert kinds(plan([t("db", "degraded", "healthy")], apply(records, better), route)) == [
        ("resolve", "db")
    ]


def test_dependants_are_named_under_their_root_cause_never_alone() -> None:
    root = t("postgres", "healthy", "error")
    dependants = [
        t(name, "healthy", "error", root_cause="postgres", suppressed=True)
        for name in ("api", "worker")
    ]
    cascade = plan([root, *dependants])
    assert kinds(cascade) == [("alert", "postgres"), ("affected", "api"), ("affected", "worker")]
    late = plan([t("web", "healthy", "error", root_cause="postgres", suppressed=True)])
    assert late == Plan()


def test_an_alert_and_its_resolve_in_one_batch_leave_nothing_open() -> None:
    p = plan([t("db", "healthy", "error"), t("db", "error", "healthy", AT + 20)])
    assert kinds(p) == [("alert", "db"), ("resolve", "db")]
    assert p.upserts == {} and p.closes == {"db:1"}


def test_reminders_repeat_open_incidents_until_resolved() -> None:
    record = plan([t("db", "healthy", "error")]).upserts["db:1"]
    records = {"db:1": record}
    assert plan_reminders(records, 60_000, record.sent_ms + 59_999) == Plan()
    due = plan_reminders(records, 60_000, record.sent_ms + 60_000)
    assert kinds(due) == [("reminder", "db")] and due.keys == ["db:1:repeat:1"]
    again = plan_reminders(due.upserts, 60_000, record.sent_ms + 120_000)
    assert again.keys == ["db:1:repeat:2"]
    assert plan_reminders(due.upserts, 60_000, AT * 2, skip=frozenset(again.keys)) == Plan()
    assert plan_reminders(records, 0, AT * 2) == Plan()
    silenced = {"db:1": msgspec.structs.replace(record, silenced=True)}
    assert plan_reminders(silenced, 60_000, AT * 2) == Plan()


STATUSES: list[Status] = ["healthy", "degraded", "error", "unknown"]


@given(
    walk=st.lists(st.sampled_from(STATUSES), min_size=1, max_size=30),
    silenced=st.lists(st.booleans(), min_size=30, max_size=30),
    cuts=st.lists(st.integers(min_value=1, max_value=5), min_size=30, max_size=30),
    statuses=st.sampled_from([("degraded", "error"), ("error",), ("degraded",)]),
)
def test_every_alert_sent_is_resolved_once_and_nothing_else_is(
    walk: list[Status], silenced: list[bool], cuts: list[int], statuses: Any
) -> None:
    """A service walks through statuses the way the fold reports them (an incident from
    the first failing status to the next healthy or unknown one), in batches of any size,
    on a route of any statuses, silenced at random: each incident that got an alert gets
    exactly one resolve, after it; no other incident does; at the end nothing stays open."""
    route = NotifyRoute(url="json://x", statuses=statuses)
    transitions: list[Transition] = []
    status: Status = "unknown"
    incident: str | None = None
    for i, to in enumerate([*walk, "healthy"]):
        if to == status:
            continue
        if to in ("degraded", "error") and incident is None:
            incident = f"db:{i}"
        transitions.append(
            t("db", status, to, AT + i, incident=incident, silenced=silenced[i % 30])
        )
        if to in ("healthy", "unknown"):
            incident = None
        status = to
    records: dict[str, OpenIncident] = {}
    said: list[tuple[str, str]] = []
    start = 0
    for cut in cuts * 2:
        batch = transitions[start : start + cut]
        start += cut
        p = plan(batch, records, route)
        said += [(line.kind, next(x.incident for x in batch if x.id == line.key) or "")
                 for line in p.lines if line.kind != "info"]  # fmt: skip
        records = apply(records, p)
    assert start >= len(transitions) and records == {}
    for incident_id in {i for _, i in said}:
        kinds_of = [k for k, i in said if i == incident_id]
        assert kinds_of[0] == "alert" and kinds_of.count("resolve") == 1
        assert kinds_of[-1] == "resolve"

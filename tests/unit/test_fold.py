"""The fold: heartbeats, rejects, expiry and blind time in; derived status and transitions out.

Time is passed in as milliseconds since the epoch; nothing here sleeps or reads a clock.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aggregator.fold import Folder, event_name, view
from aggregator.rules import Rules
from aggregator.state import FoldState, Pending
from healthbus.errors import InvalidMessage
from healthbus.schema import Heartbeat, Intent, Transition, iso_ms

#: 2026-01-01T00:00:00Z: every time below is an offset from here.
T0 = 1_767_225_600_000


def hb(service: str = "svc", **fields: object) -> Heartbeat:
    base: dict[str, object] = {"v": 1, "service": service, "interval_s": 1.0, "ok": True}
    base.update(fields)
    return Heartbeat(**base)  # type: ignore[arg-type]


def new_folder(rules: Rules | None = None, max_services: int = 200_000) -> Folder:
    return Folder(FoldState(), rules, max_services)


def summary(transitions: list[Transition]) -> list[tuple[str, str, str, int]]:
    """(event suffix, from, to, ms after T0) of each transition, in order."""
    return [(t.event.rsplit(".", 1)[1], t.from_, t.to, t.at_ms - T0) for t in transitions]


def committed(folder: Folder) -> Pending:
    """What the fold owes the next commit; resets it as the runner does after a commit."""
    pending = folder.state.pending
    folder.state.pending = Pending()
    return pending


# -- first sightings -------------------------------------------------------------------


def test_event_names() -> None:
    assert event_name("unknown", "healthy") == "healthbus.service.appeared"
    assert event_name("degraded", "healthy") == "healthbus.service.recovered"
    assert event_name("error", "healthy") == "healthbus.service.recovered"
    assert event_name("healthy", "degraded") == "healthbus.service.degraded"
    assert event_name("unknown", "error") == "healthbus.service.error"
    assert event_name("error", "unknown") == "healthbus.service.left"


def test_first_healthy_heartbeat_appears() -> None:
    folder = new_folder()
    [t] = folder.apply(hb(), T0)
    assert t.event == "healthbus.service.appeared"
    assert (t.service, t.from_, t.to, t.at_ms, t.at) == (
        "svc",
        "unknown",
        "healthy",
        T0,
        "2026-01-01T00:00:00.000Z",
    )
    assert t.incident is None
    assert folder.state.services["svc"].status == "healthy"


def test_first_failing_heartbeat_is_an_error_from_unknown() -> None:
    [t] = new_folder().apply(hb(ok=False, error="boom"), T0)
    assert (t.event, t.from_, t.to) == ("healthbus.service.error", "unknown", "error")
    assert t.reason == "failed: boom"
    assert t.incident == f"svc:{T0}"


def test_first_self_reported_degraded_heartbeat_is_degraded_from_unknown() -> None:
    [t] = new_folder().apply(hb(status="degraded"), T0)
    assert (t.event, t.from_, t.to) == ("healthbus.service.degraded", "unknown", "degraded")


def test_repeated_healthy_heartbeats_raise_nothing() -> None:
    folder = new_folder()
    folder.apply(hb(), T0)
    for i in range(1, 10):
        assert folder.apply(hb(), T0 + i * 1_000) == []
        assert folder.expire(T0 + i * 1_000 + 500) == []


# -- silence ---------------------------------------------------------------------------


def test_silence_is_stamped_at_its_deadlines_even_when_noticed_late() -> None:
    folder = new_folder()
    folder.apply(hb(interval_s=1), T0)
    transitions = folder.expire(T0 + 60_000)
    assert summary(transitions) == [
        ("degraded", "healthy", "degraded", 2_001),
        ("error", "degraded", "error", 5_001),
    ]
    assert transitions[0].reason == "no heartbeat for 2.0 s (expected every 1 s)"
    assert transitions[1].reason == "no heartbeat for 5.0 s (expected every 1 s)"


def test_silence_is_not_noticed_before_its_deadline() -> None:
    folder = new_folder()
    folder.apply(hb(interval_s=1), T0)
    assert folder.expire(T0 + 2_000) == []
    assert summary(folder.expire(T0 + 2_001)) == [("degraded", "healthy", "degraded", 2_001)]
    assert folder.expire(T0 + 5_000) == []
    assert summary(folder.expire(T0 + 5_001)) == [("error", "degraded", "error", 5_001)]


def test_next_deadline_follows_the_age_rule() -> None:
    folder = new_folder()
    assert folder.next_deadline_ms() is None
    folder.apply(hb(interval_s=1), T0)
    assert folder.next_deadline_ms() == T0 + 2_001
    folder.expire(T0 + 2_001)
    assert folder.next_deadline_ms() == T0 + 5_001


def test_next_deadline_is_the_earliest_of_all_services() -> None:
    folder = new_folder()
    folder.apply(hb("slow", interval_s=10), T0)
    folder.apply(hb("fast", interval_s=1), T0 + 300)
    folder.apply(hb("mid", interval_s=2), T0 + 600)
    assert folder.next_deadline_ms() == T0 + 2_301
    folder.expire(T0 + 2_301)
    assert folder.next_deadline_ms() == T0 + 4_601


def test_recovery_carries_the_incident_of_the_error() -> None:
    folder = new_folder()
    folder.apply(hb(interval_s=1), T0)
    degraded, error = folder.expire(T0 + 6_000)
    [recovered] = folder.apply(hb(interval_s=1), T0 + 7_000)
    assert (recovered.event, recovered.from_, recovered.to) == (
        "healthbus.service.recovered",
        "error",
        "healthy",
    )
    assert degraded.incident == error.incident == recovered.incident == f"svc:{T0 + 2_001}"
    [again, *_] = folder.expire(T0 + 20_000)
    assert again.incident == f"svc:{T0 + 9_001}"


def test_transition_ids_are_service_event_and_stamp() -> None:
    folder = new_folder()
    ids = [t.id for t in folder.apply(hb(interval_s=1), T0)]
    ids += [t.id for t in folder.expire(T0 + 6_000)]
    ids += [t.id for t in folder.apply(hb(interval_s=1), T0 + 7_000)]
    assert ids == [
        f"svc:appeared:{T0}",
        f"svc:degraded:{T0 + 2_001}",
        f"svc:error:{T0 + 5_001}",
        f"svc:recovered:{T0 + 7_000}",
    ]


def test_transition_ids_are_stable_across_folds_of_the_same_input() -> None:
    def run() -> list[str]:
        folder = new_folder()
        out = folder.apply(hb(interval_s=1), T0)
        out += folder.expire(T0 + 6_000)
        out += folder.apply(hb(interval_s=1), T0 + 7_000)
        return [t.id for t in out]

    assert run() == run()


# -- goodbye ---------------------------------------------------------------------------


def test_goodbye_of_one_of_two_instances_raises_nothing() -> None:
    folder = new_folder()
    folder.apply(hb(instance="a"), T0)
    folder.apply(hb(instance="b"), T0)
    assert folder.apply(hb(instance="a", goodbye=True), T0 + 500) == []
    assert [i.key for i in folder.state.services["svc"].each()] == ["b"]
    for i in range(1, 20):
        assert folder.apply(hb(instance="b"), T0 + i * 1_000) == []
        assert folder.expire(T0 + i * 1_000) == []
    assert folder.state.services["svc"].status == "healthy"


def test_goodbye_then_a_new_instance_within_the_grace_is_a_deploy() -> None:
    folder = new_folder()
    folder.apply(hb(instance="old"), T0)
    assert folder.apply(hb(instance="old", goodbye=True), T0 + 1_000) == []
    assert folder.expire(T0 + 5_000) == []
    assert folder.apply(hb(instance="new"), T0 + 5_500) == []
    for i in range(6, 30):
        assert folder.expire(T0 + i * 1_000) == []
        assert folder.apply(hb(instance="new"), T0 + i * 1_000) == []
    assert folder.state.services["svc"].status == "healthy"


def test_goodbye_keeps_the_status_and_says_so_during_the_grace() -> None:
    folder = new_folder()
    folder.apply(hb(), T0)
    folder.apply(hb(goodbye=True), T0 + 1_000)
    svc = folder.state.services["svc"]
    assert svc.status == "healthy"
    assert svc.reason == "stopped (goodbye); waiting for an instance"
    assert folder.next_deadline_ms() == T0 + 6_000  # grace: error_after x interval


def test_goodbye_and_no_return_leaves_after_the_grace() -> None:
    folder = new_folder()
    folder.apply(hb(), T0)
    folder.apply(hb(goodbye=True), T0 + 1_000)
    committed(folder)
    assert folder.expire(T0 + 5_999) == []
    [left] = folder.expire(T0 + 10_000)
    assert summary([left]) == [("left", "healthy", "unknown", 6_000)]
    assert left.reason == "all instances stopped (goodbye)"
    assert "svc" not in folder.state.services
    pending = committed(folder)
    assert pending.removed == {"svc"}
    assert "svc" not in pending.urgent | pending.deferred | pending.fresh
    assert folder.next_deadline_ms() is None
    assert folder.state.counts["healthy"] == 0


def test_a_service_that_left_appears_again() -> None:
    folder = new_folder()
    folder.apply(hb(), T0)
    folder.apply(hb(goodbye=True), T0 + 1_000)
    folder.expire(T0 + 10_000)
    assert summary(folder.apply(hb(), T0 + 11_000)) == [("appeared", "unknown", "healthy", 11_000)]


# -- several instances -----------------------------------------------------------------


def test_every_field_of_a_view_comes_from_its_own_source() -> None:
    """Views are built by position (for speed): each field must still be the right one."""
    folder = new_folder()
    folder.apply(hb("db"), T0)
    folder.apply(hb("api", instance="b", duration_ms=3.0, details={"q": 1}), T0)
    failing = hb(
        "api", instance="a", ok=False, duration_ms=7.5, error="refused", hint="restart it",
        details={"q": 2}, depends_on=["db"], interval_s=2.0,
    )  # fmt: skip
    folder.apply(failing, T0 + 250)
    folder.apply(failing, T0 + 500)  # still failing: `since` stays at the first
    svc = folder.state.services["api"]
    got = view(svc)
    assert (got.name, got.kind, got.status, got.reason) == ("api", "perpetual", "error", svc.reason)
    assert (got.since, got.last_heartbeat) == (iso_ms(T0 + 250), iso_ms(T0 + 500))
    assert (got.last_heartbeat_ms, got.last_duration_ms) == (T0 + 500, 7.5)
    assert (got.expected_interval_seconds, got.details) == (2.0, {"q": 2})
    assert (got.error, got.hint, got.depends_on) == ("refused", "restart it", ["db"])
    assert (got.incident, got.flapping, got.affected_by) == (svc.incident, False, None)
    assert got.incident is not None
    a, b = got.instances
    assert (a.instance, a.status, a.last_heartbeat, a.last_heartbeat_ms) == (
        "a", "error", iso_ms(T0 + 500), T0 + 500,
    )  # fmt: skip
    assert (a.last_duration_ms, a.error, a.reason, a.restarts, a.lost) == (
        7.5, "refused", svc.find("a").reason, 0, 0,
    )  # fmt: skip
    assert (b.instance, b.status, b.last_duration_ms, b.error, b.reason) == (
        "b", "healthy", 3.0, None, "ok",
    )  # fmt: skip


def test_service_takes_the_worst_instance_and_names_it() -> None:
    folder = new_folder()
    folder.apply(hb(instance="host-a"), T0)
    [t] = folder.apply(hb(instance="host-b", ok=False, error="disk full"), T0 + 10)
    assert (t.from_, t.to) == ("healthy", "error")
    assert t.reason == "instance host-b: failed: disk full"
    assert folder.apply(hb(instance="host-a"), T0 + 20) == []
    [recovered] = folder.apply(hb(instance="host-b"), T0 + 30)
    assert recovered.to == "healthy"


def test_one_silent_instance_degrades_the_service() -> None:
    folder = new_folder()
    folder.apply(hb(instance="a"), T0)
    folder.apply(hb(instance="b"), T0)
    folder.apply(hb(instance="a"), T0 + 1_500)
    [t] = folder.expire(T0 + 2_500)
    assert summary([t]) == [("degraded", "healthy", "degraded", 2_001)]
    assert t.reason.startswith("instance b: no heartbeat for")


# -- jobs (phase start / end) ----------------------------------------------------------


def test_a_start_alone_is_not_a_success() -> None:
    folder = new_folder()
    assert folder.apply(hb("job", interval_s=3_600, phase="start", timeout_s=10), T0) == []
    svc = folder.state.services["job"]
    assert svc.status == "unknown"
    assert svc.reason == "started; waiting for its first result"


def test_a_start_without_end_past_its_timeout_is_an_error_and_the_end_recovers() -> None:
    folder = new_folder()
    folder.apply(hb("job", interval_s=3_600), T0)
    assert folder.apply(hb("job", interval_s=3_600, phase="start", timeout_s=10), T0 + 1_000) == []
    assert folder.next_deadline_ms() == T0 + 11_001
    assert folder.expire(T0 + 11_000) == []
    [error] = folder.expire(T0 + 60_000)
    assert summary([error]) == [("error", "healthy", "error", 11_001)]
    assert error.reason == "started 10.0 s ago and has not finished (timeout 10 s)"
    [recovered] = folder.apply(hb("job", interval_s=3_600, phase="end"), T0 + 61_000)
    assert summary([recovered]) == [("recovered", "error", "healthy", 61_000)]
    assert recovered.incident == error.incident


def test_first_start_past_its_timeout_is_an_error_from_unknown() -> None:
    folder = new_folder()
    folder.apply(hb("job", interval_s=3_600, phase="start", timeout_s=5), T0)
    assert summary(folder.expire(T0 + 9_000)) == [("error", "unknown", "error", 5_001)]
    assert summary(folder.apply(hb("job", interval_s=3_600), T0 + 9_500)) == [
        ("recovered", "error", "healthy", 9_500)
    ]


def test_an_end_within_the_timeout_raises_nothing() -> None:
    folder = new_folder()
    folder.apply(hb("job", interval_s=3_600), T0)
    folder.apply(hb("job", interval_s=3_600, phase="start", timeout_s=10), T0 + 1_000)
    assert folder.apply(hb("job", interval_s=3_600, phase="end"), T0 + 9_000) == []
    assert folder.expire(T0 + 60_000) == []


# -- intent ----------------------------------------------------------------------------


def test_intent_suppresses_the_age_rule_until_its_end() -> None:
    until = T0 + 60_000
    intent = Intent(state="deploying", until=datetime.fromtimestamp(until / 1000, UTC))
    folder = new_folder()
    folder.apply(hb(interval_s=1, intent=intent), T0)
    assert folder.expire(until) == []
    assert folder.state.services["svc"].status == "healthy"
    # Past the window the silence counts from its end.
    assert summary(folder.expire(until + 10_000)) == [
        ("degraded", "healthy", "degraded", 62_001),
        ("error", "degraded", "error", 65_001),
    ]


def test_intent_does_not_hide_a_failure() -> None:
    intent = Intent(state="draining", until=datetime.fromtimestamp((T0 + 60_000) / 1000, UTC))
    [t] = new_folder().apply(hb(ok=False, intent=intent), T0)
    assert t.to == "error"


# -- rejected entries ------------------------------------------------------------------


def test_reject_of_a_known_service_is_an_error_until_a_valid_heartbeat() -> None:
    folder = new_folder()
    folder.apply(hb(), T0)
    [error] = folder.reject("svc", "invalid heartbeat: Expected `float`", T0 + 100)
    assert summary([error]) == [("error", "healthy", "error", 100)]
    assert error.reason == "invalid heartbeat: Expected `float`"
    assert view(folder.state.services["svc"]).error == "invalid heartbeat: Expected `float`"
    [recovered] = folder.apply(hb(), T0 + 200)
    assert summary([recovered]) == [("recovered", "error", "healthy", 200)]
    assert recovered.incident == error.incident
    assert folder.state.services["svc"].invalid is None


def test_repeated_rejects_raise_one_error() -> None:
    folder = new_folder()
    folder.apply(hb(), T0)
    assert len(folder.reject("svc", "bad", T0 + 100)) == 1
    assert folder.reject("svc", "bad", T0 + 200) == []
    assert folder.reject("svc", "worse", T0 + 300) == []
    assert folder.state.services["svc"].reason == "worse"


@pytest.mark.timeout(5)
def test_reject_of_an_unseen_service_is_an_error_and_does_not_stall_expiry() -> None:
    folder = new_folder()
    assert summary(folder.reject("new", "bad", T0)) == [("error", "unknown", "error", 0)]
    assert folder.expire(T0 + 60_000) == []
    assert folder.next_deadline_ms() == T0 + Rules().forget_after_ms


@pytest.mark.timeout(5)
def test_a_goodbye_from_an_unseen_service_does_not_stall_expiry() -> None:
    folder = new_folder()
    folder.apply(hb("ghost", goodbye=True), T0)
    folder.expire(T0 + 600_000)
    assert "ghost" not in folder.state.services
    assert folder.next_deadline_ms() is None


# -- limits ----------------------------------------------------------------------------


def test_max_services_refuses_new_names_but_keeps_known_ones() -> None:
    folder = new_folder(max_services=2)
    folder.apply(hb("a"), T0)
    folder.apply(hb("b"), T0)
    with pytest.raises(InvalidMessage, match="max_services=2"):
        folder.apply(hb("c"), T0 + 1)
    with pytest.raises(InvalidMessage, match="max_services=2"):
        folder.reject("c", "bad", T0 + 1)
    assert "c" not in folder.state.services
    assert folder.apply(hb("a"), T0 + 2) == []
    assert len(folder.reject("b", "bad", T0 + 3)) == 1


# -- blind time ------------------------------------------------------------------------


def test_a_bus_outage_is_not_a_service_outage() -> None:
    folder = new_folder()
    folder.apply(hb(interval_s=10), T0)
    assert folder.expire(T0 + 5_000) == []
    assert folder.grant(T0 + 5_000, T0 + 65_000) == 60_000
    assert folder.apply(hb(interval_s=10), T0 + 66_000) == []
    assert folder.expire(T0 + 66_000) == []
    assert folder.state.services["svc"].status == "healthy"


def test_without_the_grant_the_same_gap_would_be_an_outage() -> None:
    folder = new_folder()
    folder.apply(hb(interval_s=10), T0)
    assert folder.expire(T0 + 5_000) == []
    assert [t.to for t in folder.expire(T0 + 66_000)] == ["degraded", "error"]


def test_deadlines_move_by_the_blind_time_granted() -> None:
    folder = new_folder()
    folder.apply(hb(interval_s=10), T0)
    folder.expire(T0 + 5_000)
    folder.grant(T0 + 5_000, T0 + 65_000)
    assert folder.next_deadline_ms() == T0 + 60_000 + 20_001
    assert summary(folder.expire(T0 + 90_000)) == [("degraded", "healthy", "degraded", 80_001)]


def test_entries_read_after_a_grant_are_not_older_than_the_floor() -> None:
    folder = new_folder()
    folder.apply(hb(interval_s=10), T0)
    folder.expire(T0 + 1_000)
    folder.grant(T0 + 1_000, T0 + 61_000)
    # Written while the aggregator was blind, read afterwards: it ages from the end of the
    # blind span, not from its own (earlier) time.
    assert folder.apply(hb(interval_s=10), T0 + 30_000) == []
    # A steady heartbeat may leave an earlier deadline (it re-judges, then waits for the
    # true one): never a later one.
    deadline = folder.next_deadline_ms()
    assert deadline is not None and deadline <= T0 + 61_000 + 20_001
    assert folder.expire(T0 + 81_000) == []
    assert summary(folder.expire(T0 + 81_001)) == [("degraded", "healthy", "degraded", 81_001)]
    assert view(folder.state.services["svc"]).last_heartbeat_ms == T0 + 30_000


def test_grant_counts_only_time_not_yet_seen() -> None:
    folder = new_folder()
    folder.apply(hb(interval_s=10), T0)
    folder.expire(T0 + 1_000)
    assert folder.grant(T0, T0 + 61_000) == 60_000
    assert folder.grant(T0 + 61_000, T0 + 61_000) == 0  # a restart without a gap: nothing


# -- forgetting ------------------------------------------------------------------------


def test_long_silent_services_are_forgotten() -> None:
    folder = new_folder(Rules(forget_after_ms=60_000))
    folder.apply(hb(interval_s=1), T0)
    committed(folder)
    transitions = folder.expire(T0 + 120_000)
    assert summary(transitions) == [
        ("degraded", "healthy", "degraded", 2_001),
        ("error", "degraded", "error", 5_001),
        ("left", "error", "unknown", 60_000),
    ]
    assert transitions[-1].reason == "silent for more than the forget period"
    assert "svc" not in folder.state.services
    assert committed(folder).removed == {"svc"}


@pytest.mark.timeout(5)
def test_a_dead_instance_beside_a_live_one_does_not_stall_expiry() -> None:
    folder = new_folder(Rules(forget_after_ms=60_000))
    folder.apply(hb(instance="a"), T0)
    for i in range(0, 90):
        folder.apply(hb(instance="b"), T0 + i * 1_000)
        folder.expire(T0 + i * 1_000 + 500)
    svc = folder.state.services["svc"]
    assert svc.status == "error"
    assert svc.deadline_v is not None and svc.deadline_v > folder.state.clock.now_v


# -- the watermark ---------------------------------------------------------------------


def test_an_entry_behind_the_watermark_does_not_undo_an_expiry() -> None:
    # Once caught up, `now` is extrapolated from Redis TIME and may run a few ms ahead of
    # the next entry's id: that entry must not roll a sibling's expiry back.
    folder = new_folder()
    folder.apply(hb(instance="a"), T0)
    folder.apply(hb(instance="b"), T0)
    folder.apply(hb(instance="a"), T0 + 1_500)
    assert summary(folder.expire(T0 + 2_005)) == [("degraded", "healthy", "degraded", 2_001)]
    assert folder.apply(hb(instance="a"), T0 + 1_999) == []
    assert folder.expire(T0 + 2_010) == []
    assert folder.state.clock.now_v == T0 + 2_010


def test_a_late_heartbeat_still_reports_the_silence_before_it() -> None:
    # A backlog read in one batch: no expire between the two heartbeats.
    folder = new_folder()
    folder.apply(hb(interval_s=1), T0)
    assert summary(folder.apply(hb(interval_s=1), T0 + 6_000)) == [
        ("degraded", "healthy", "degraded", 2_001),
        ("error", "degraded", "error", 5_001),
        ("recovered", "error", "healthy", 6_000),
    ]


def test_an_entry_folds_the_deadlines_its_time_passes() -> None:
    folder = new_folder()
    folder.apply(hb("a", interval_s=1), T0)
    transitions = folder.apply(hb("b", interval_s=1), T0 + 3_000)
    assert [(t.service, t.to, t.at_ms - T0) for t in transitions] == [
        ("a", "degraded", 2_001),
        ("b", "healthy", 3_000),
    ]
    assert folder.reject("b", "bad", T0 + 6_000)[0].service == "a"


def test_an_entry_refused_for_max_services_changes_nothing() -> None:
    folder = new_folder(max_services=1)
    folder.apply(hb("a", interval_s=1), T0)
    with pytest.raises(InvalidMessage):
        folder.apply(hb("b"), T0 + 3_000)
    assert folder.state.clock.now_v == T0
    assert summary(folder.expire(T0 + 3_000)) == [("degraded", "healthy", "degraded", 2_001)]


# -- what the next commit owes ---------------------------------------------------------


def test_pending_classifies_a_new_service_as_urgent() -> None:
    folder = new_folder()
    folder.apply(hb(), T0)
    pending = committed(folder)
    assert pending.urgent == {"svc"}
    assert pending.state == {"svc"}


def test_pending_classifies_a_time_only_heartbeat_as_fresh() -> None:
    folder = new_folder()
    folder.apply(hb(details={"runs": 1}, duration_ms=10.0), T0)
    committed(folder)
    folder.apply(hb(details={"runs": 1}, duration_ms=10.0), T0 + 1_000)
    pending = committed(folder)
    assert (pending.urgent, pending.deferred, pending.fresh) == (set(), set(), {"svc"})
    assert pending.state == {"svc"}


@pytest.mark.parametrize(
    "change", [{"details": {"runs": 2}}, {"duration_ms": 11.0}, {"details": None}]
)
def test_pending_classifies_details_or_duration_changes_as_deferred(
    change: dict[str, object],
) -> None:
    folder = new_folder()
    folder.apply(hb(details={"runs": 1}, duration_ms=10.0), T0)
    committed(folder)
    fields: dict[str, object] = {"details": {"runs": 1}, "duration_ms": 10.0, **change}
    folder.apply(hb(**fields), T0 + 1_000)
    pending = committed(folder)
    assert (pending.urgent, pending.deferred, pending.fresh) == (set(), {"svc"}, set())


@pytest.mark.parametrize(
    "change",
    [
        {"ok": False},
        {"status": "degraded"},
        {"error": "flaky"},
        {"hint": "add an index"},
        {"interval_s": 2.0},
        {"depends_on": ["postgres"]},
    ],
)
def test_pending_classifies_status_error_and_contract_changes_as_urgent(
    change: dict[str, object],
) -> None:
    folder = new_folder()
    folder.apply(hb(), T0)
    committed(folder)
    folder.apply(hb(**change), T0 + 1_000)
    assert "svc" in committed(folder).urgent


def test_pending_classifies_an_expiry_as_urgent() -> None:
    folder = new_folder()
    folder.apply(hb(), T0)
    committed(folder)
    folder.expire(T0 + 2_001)
    pending = committed(folder)
    assert pending.urgent == {"svc"}
    assert "svc" in pending.state


def test_pending_is_empty_after_an_idle_expire() -> None:
    folder = new_folder()
    folder.apply(hb(), T0)
    committed(folder)
    folder.expire(T0 + 1_000)
    assert not committed(folder)


# -- the snapshot's view ---------------------------------------------------------------


def test_view_of_a_single_unnamed_instance() -> None:
    folder = new_folder()
    folder.apply(hb(interval_s=60, duration_ms=142.0, details={"runs": 42}, hint="h"), T0)
    doc = view(folder.state.services["svc"])
    assert doc.name == "svc"
    assert doc.kind == "perpetual"
    assert doc.status == "healthy"
    assert doc.since == iso_ms(T0)
    assert doc.last_heartbeat == "2026-01-01T00:00:00.000Z"
    assert doc.last_heartbeat_ms == T0
    assert doc.last_duration_ms == 142.0
    assert doc.expected_interval_seconds == 60
    assert doc.details == {"runs": 42}
    assert doc.hint == "h"
    assert doc.error is None
    assert doc.instances == []


def test_view_lists_a_single_named_instance() -> None:
    folder = new_folder()
    folder.apply(hb(instance="host-a:4242"), T0 + 1_234)
    [inst] = view(folder.state.services["svc"]).instances
    assert inst.instance == "host-a:4242"
    assert inst.last_heartbeat == "2026-01-01T00:00:01.234Z"
    assert inst.status == "healthy"


def test_view_lists_several_instances_latest_first_with_the_worst_error() -> None:
    folder = new_folder()
    folder.apply(hb(instance="a"), T0)
    folder.apply(hb(instance="b", ok=False, error="boom"), T0 + 500)
    doc = view(folder.state.services["svc"])
    assert [(i.instance, i.status) for i in doc.instances] == [("b", "error"), ("a", "healthy")]
    assert doc.error == "boom"
    assert doc.last_heartbeat_ms == T0 + 500
    assert doc.incident == f"svc:{T0 + 500}"


def test_view_keeps_the_error_text_of_a_recovered_service_out() -> None:
    folder = new_folder()
    folder.apply(hb(ok=False, error="boom"), T0)
    folder.apply(hb(), T0 + 1_000)
    doc = view(folder.state.services["svc"])
    assert (doc.status, doc.error, doc.incident) == ("healthy", None, None)
    assert doc.since == iso_ms(T0 + 1_000)

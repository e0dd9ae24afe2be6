"""The status rules: one instance's status from its last heartbeat and its age (design.md)."""

from __future__ import annotations

import pytest

from aggregator.rules import Rules, judge, next_change_ms
from healthbus.schema import Details, Heartbeat, Status

RULES = Rules()


def hb(**fields: object) -> Heartbeat:
    base: dict[str, object] = {"v": 1, "service": "svc", "interval_s": 1.0, "ok": True}
    base.update(fields)
    return Heartbeat(**base)  # type: ignore[arg-type]


def status_of(heartbeat: Heartbeat, age_ms: int = 0) -> Status:
    return judge(heartbeat, age_ms, RULES)[0]


def consumer(**details: float | int | str | bool | None) -> Heartbeat:
    d: Details = dict(details)
    return hb(kind="consumer", details=d)


def test_fresh_ok_heartbeat_is_healthy() -> None:
    assert judge(hb(), 0, RULES) == ("healthy", "ok")


def test_ok_false_is_error_at_once_with_the_error_text_in_the_reason() -> None:
    status, reason = judge(hb(ok=False, error="connection refused"), 0, RULES)
    assert status == "error"
    assert "connection refused" in reason


def test_ok_false_without_error_text_still_says_why() -> None:
    assert judge(hb(ok=False), 0, RULES) == ("error", "last run failed")


@pytest.mark.parametrize(
    ("age_ms", "expected"),
    [
        (0, "healthy"),
        (2_000, "healthy"),  # exactly 2 x interval: not yet
        (2_001, "degraded"),
        (5_000, "degraded"),  # exactly 5 x interval: not yet
        (5_001, "error"),
        (86_400_000, "error"),
    ],
)
def test_age_rule_degrades_past_twice_and_errors_past_five_times_the_interval(
    age_ms: int, expected: Status
) -> None:
    assert status_of(hb(interval_s=1.0), age_ms) == expected


def test_age_reason_says_how_long_and_what_was_promised() -> None:
    status, reason = judge(hb(interval_s=15), 31_200, RULES)
    assert status == "degraded"
    assert reason == "no heartbeat for 31.2 s (expected every 15 s)"


def test_age_thresholds_are_configurable() -> None:
    rules = Rules(degraded_after=3.0, error_after=4.0)
    assert judge(hb(), 3_000, rules)[0] == "healthy"
    assert judge(hb(), 3_001, rules)[0] == "degraded"
    assert judge(hb(), 4_001, rules)[0] == "error"


@pytest.mark.parametrize("reported", ["degraded", "error"])
def test_self_reported_status_counts(reported: Status) -> None:
    status, reason = judge(hb(status=reported), 0, RULES)
    assert status == reported
    assert reason == f"reports {reported}"


def test_self_reported_status_carries_the_error_text() -> None:
    assert judge(hb(status="degraded", error="slow upstream"), 0, RULES) == (
        "degraded",
        "reports degraded: slow upstream",
    )


def test_self_reported_healthy_does_not_hide_a_failure() -> None:
    assert status_of(hb(status="healthy", ok=False)) == "error"


def test_self_reported_healthy_does_not_hide_silence() -> None:
    assert status_of(hb(status="healthy"), 5_001) == "error"


def test_perpetual_run_longer_than_its_interval_is_degraded() -> None:
    status, reason = judge(hb(interval_s=1.0, duration_ms=1_500.0), 0, RULES)
    assert status == "degraded"
    assert reason == "last run took 1.5 s, longer than its 1 s interval"


def test_perpetual_run_exactly_as_long_as_its_interval_is_healthy() -> None:
    assert status_of(hb(interval_s=1.0, duration_ms=1_000.0)) == "healthy"


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, "healthy"), (1, "degraded"), (4, "degraded"), (5, "error"), (12, "error")],
)
def test_consumer_consecutive_failures(failures: int, expected: Status) -> None:
    assert status_of(consumer(consecutive_failures=failures)) == expected


def test_consumer_failure_reason_counts_them() -> None:
    assert judge(consumer(consecutive_failures=5), 0, RULES) == ("error", "5 consecutive failures")


@pytest.mark.parametrize(
    ("depth", "capacity", "expected"),
    [
        (0, 100, "healthy"),
        (79, 100, "healthy"),
        (80, 100, "degraded"),
        (99, 100, "degraded"),
        (100, 100, "error"),  # full
        (150, 100, "error"),
        (5, 0, "healthy"),  # no capacity known: no queue rule
    ],
)
def test_consumer_queue_fill(depth: int, capacity: int, expected: Status) -> None:
    assert status_of(consumer(queue_depth=depth, queue_capacity=capacity)) == expected


def test_consumer_queue_reasons() -> None:
    assert judge(consumer(queue_depth=80, queue_capacity=100), 0, RULES)[1] == (
        "queue at 80% of capacity (80)"
    )
    assert judge(consumer(queue_depth=100, queue_capacity=100), 0, RULES)[1] == (
        "queue full (100 of 100)"
    )


def test_consumer_takes_the_worst_of_failures_and_queue() -> None:
    assert status_of(consumer(consecutive_failures=1, queue_depth=100, queue_capacity=100)) == (
        "error"
    )


@pytest.mark.parametrize(
    "details",
    [
        {"consecutive_failures": True},
        {"queue_depth": True, "queue_capacity": 1},
        {"queue_depth": 1, "queue_capacity": True},
        {"consecutive_failures": "7"},
        {"consecutive_failures": None},
    ],
)
def test_bools_strings_and_nulls_in_details_are_not_numbers(
    details: dict[str, bool | int | str | None],
) -> None:
    assert status_of(consumer(**details)) == "healthy"


def test_consumer_is_not_judged_by_the_duration_rule() -> None:
    assert status_of(hb(kind="consumer", interval_s=1.0, duration_ms=60_000.0)) == "healthy"


def test_probe_does_not_use_the_duration_rule() -> None:
    assert status_of(hb(kind="probe", interval_s=1.0, duration_ms=60_000.0)) == "healthy"


def test_probe_reports_its_own_latency_verdict() -> None:
    assert status_of(hb(kind="probe", status="degraded", duration_ms=700.0)) == "degraded"


def test_unknown_kind_is_judged_as_perpetual() -> None:
    assert status_of(hb(kind="cronjob", interval_s=1.0, duration_ms=1_500.0)) == "degraded"
    assert status_of(hb(kind="cronjob", details={"consecutive_failures": 9})) == "healthy"


def test_the_worst_rule_wins() -> None:
    heartbeat = hb(interval_s=1.0, duration_ms=1_500.0, status="degraded")
    assert status_of(heartbeat, 5_001) == "error"
    assert judge(heartbeat, 5_001, RULES)[1].startswith("no heartbeat for")


@pytest.mark.parametrize(
    ("age_ms", "expected"),
    [
        (0, 2_001),
        (2_000, 2_001),
        (2_001, 5_001),
        (5_000, 5_001),
        (5_001, RULES.forget_after_ms + 1),
    ],
)
def test_next_change_is_the_first_age_at_which_the_age_rule_worsens(
    age_ms: int, expected: int
) -> None:
    assert next_change_ms(hb(interval_s=1.0), age_ms, RULES) == expected


@pytest.mark.parametrize("interval_s", [0.001, 0.3, 1.0, 1.5, 7.25, 60.0, 86_400.0])
def test_status_changes_exactly_at_next_change(interval_s: float) -> None:
    heartbeat = hb(interval_s=interval_s)
    age = 0
    for expected in ("degraded", "error"):
        change = next_change_ms(heartbeat, age, RULES)
        assert status_of(heartbeat, change - 1) == status_of(heartbeat, age)
        assert status_of(heartbeat, change) == expected
        age = change

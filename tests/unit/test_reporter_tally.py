"""The consumer tally: counts, the failure streak, and when a consumer looks stuck.

Times are plain seconds passed in, so nothing here sleeps.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from publishers.consumer import ConsumerTally


def test_a_report_carries_what_the_consumer_rules_read() -> None:
    tally = ConsumerTally(0.0, stall_after_s=10, capacity=100)
    token = tally.begin(1.0)
    tally.end(token, 1.25, processed=20)
    report = tally.report(2.0, depth=7)
    assert report is not None
    assert report.details == {
        "consecutive_failures": 0,
        "processed": 20,
        "failed": 0,
        "in_flight": 0,
        "queue_depth": 7,
        "queue_capacity": 100,
    }
    assert report.duration_ms == 250.0 and report.error is None


def test_failures_build_a_streak_that_a_clean_batch_ends() -> None:
    tally = ConsumerTally(0.0, stall_after_s=10)
    for i in range(3):
        tally.end(tally.begin(i), i + 0.5, failed=4, error=f"TimeoutError: try {i}")
    report = tally.report(4.0, depth=None)
    assert report is not None
    assert report.details["consecutive_failures"] == 3 and report.details["failed"] == 12
    assert report.error == "TimeoutError: try 2" and "queue_depth" not in report.details
    tally.record(5.0, processed=10, duration_s=0.1)
    report = tally.report(5.0, depth=None)
    assert report is not None and report.details["consecutive_failures"] == 0
    assert report.error is None and report.details["processed"] == 10


def test_a_batch_running_past_the_stall_limit_silences_the_reports() -> None:
    tally = ConsumerTally(0.0, stall_after_s=10)
    token = tally.begin(1.0)
    assert tally.report(11.0, depth=0) is not None
    assert tally.report(11.5, depth=0) is None
    assert tally.stuck(11.5, depth=0) == "a batch has been running for 10.5 s"
    tally.end(token, 12.0, processed=1)
    assert tally.report(12.0, depth=0) is not None


def test_waiting_work_with_no_progress_is_stuck_but_an_idle_consumer_is_not() -> None:
    tally = ConsumerTally(0.0, stall_after_s=10)
    assert tally.report(100.0, depth=0) is not None  # nothing to do: fine
    assert tally.report(100.0, depth=None) is not None  # depth unknown: cannot tell
    assert tally.report(100.0, depth=3) is None
    tally.record(100.0, processed=1)
    assert tally.report(105.0, depth=3) is not None


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.integers(0, 50), st.booleans()), min_size=1, max_size=30
    )
)
def test_counts_add_up_and_the_streak_counts_the_trailing_failed_batches(
    batches: list[tuple[int, int, bool]],
) -> None:
    tally = ConsumerTally(0.0, stall_after_s=1e9)
    for i, (processed, failed, with_error) in enumerate(batches):
        tally.record(
            float(i), processed=processed, failed=failed, error="e" if with_error else None
        )
    streak = 0
    for _, failed, with_error in reversed(batches):
        if not (failed or with_error):
            break
        streak += 1
    assert tally.processed == sum(b[0] for b in batches)
    assert tally.failed == sum(b[1] for b in batches)
    assert tally.consecutive_failures == streak
